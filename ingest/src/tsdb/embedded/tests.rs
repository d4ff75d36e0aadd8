use super::*;
use crate::tsdb::{parse_where, Downsample};
use std::fs::OpenOptions;
use std::io::Write;

const H: i64 = 3_600_000_000_000;
const IMEI: &str = "000000000000000";

fn pt(t: i64, fields: &[(&str, FieldValue)]) -> Point {
    Point {
        measurement: "telemetry".into(),
        imei: IMEI.into(),
        tags: BTreeMap::new(),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect(),
        time_ns: t,
    }
}

/// The spec's example: 13 rows 4 h apart; temperature every other row.
fn spec_data() -> Vec<Point> {
    let current = [
        1.234, 2.234, 3.234, 1.234, 2.345, 2.678, 2.91, 2.345, 2.678, 2.91, 2.345, 2.678, 2.91,
    ];
    let voltage = [
        14.243, 14.723, 14.826, 13.284, 12.345, 12.678, 12.91, 12.345, 12.678, 12.91, 12.345,
        12.678, 12.91,
    ];
    (0..13)
        .map(|i| {
            let mut f = vec![
                ("current", FieldValue::Float(current[i])),
                ("voltage", FieldValue::Float(voltage[i])),
            ];
            if i % 2 == 0 {
                f.push(("temperature", FieldValue::Float(21.345)));
            }
            pt(i as i64 * 4 * H, &f)
        })
        .collect()
}

fn floats(r: &QueryResult, field: &str) -> Vec<Option<f64>> {
    r.series(field)
        .unwrap()
        .into_iter()
        .map(|(v, _)| v.and_then(FieldValue::as_f64))
        .collect()
}

#[test]
fn raw_query_returns_every_field_with_nulls() {
    let db = Embedded::in_memory();
    db.write_sync(&spec_data()).unwrap();
    let r = db
        .query_sync(&Query::new("telemetry", IMEI, 0, 100 * H))
        .unwrap();
    assert_eq!(r.times.len(), 13);
    assert_eq!(
        r.columns.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        vec!["current", "temperature", "voltage"]
    );
    let t = floats(&r, "temperature");
    assert_eq!(t[0], Some(21.345));
    assert_eq!(t[1], None);
    assert_eq!(r.tags.get("product_imei").map(String::as_str), Some(IMEI));
    // Another unit sees nothing.
    let other = db
        .query_sync(&Query::new("telemetry", "1", 0, 100 * H))
        .unwrap();
    assert!(other.times.is_empty());
}

#[test]
fn where_filters_rows_by_other_fields() {
    // The spec: current and temperature where voltage > 14.0, first day.
    let db = Embedded::in_memory();
    db.write_sync(&spec_data()).unwrap();
    let mut q = Query::new("telemetry", IMEI, 0, 24 * H);
    q.fields = Fields::List(vec!["current".into(), "temperature".into()]);
    q.filter = Some(parse_where("'voltage' > 14.0").unwrap());
    let r = db.query_sync(&q).unwrap();
    assert_eq!(r.times, vec![0, 4 * H, 8 * H]);
    assert_eq!(
        floats(&r, "current"),
        vec![Some(1.234), Some(2.234), Some(3.234)]
    );
    assert_eq!(
        floats(&r, "temperature"),
        vec![Some(21.345), None, Some(21.345)]
    );
    q.filter = Some(parse_where("voltage > 14 AND (current < 2 OR current > 3)").unwrap());
    assert_eq!(db.query_sync(&q).unwrap().times, vec![0, 8 * H]);
    q.limit = Some(1);
    assert_eq!(db.query_sync(&q).unwrap().times, vec![0]);
}

#[test]
fn downsampling_functions() {
    let db = Embedded::in_memory();
    let pts: Vec<Point> = [1.0, 2.0, 4.0, 10.0]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            pt(
                i as i64 * 10 * 60_000_000_000,
                &[
                    ("x", FieldValue::Float(*v)),
                    ("n", FieldValue::Int(i as i64)),
                ],
            )
        })
        .collect();
    db.write_sync(&pts).unwrap();
    // One 1 h bucket holding all four, plus an empty one.
    let mut q = Query::new("telemetry", IMEI, 0, H + 1);
    q.fields = Fields::List(vec!["x".into()]);
    let want = [
        (Aggregate::Mean, Some(4.25)),
        (Aggregate::Count, Some(4.0)),
        (Aggregate::Sum, Some(17.0)),
        (Aggregate::Min, Some(1.0)),
        (Aggregate::Max, Some(10.0)),
        (Aggregate::First, Some(1.0)),
        (Aggregate::Last, Some(10.0)),
        (Aggregate::Median, Some(3.0)),
        (Aggregate::Spread, Some(9.0)),
        (
            Aggregate::Stddev,
            Some(
                ((3.25f64.powi(2) + 2.25f64.powi(2) + 0.25f64.powi(2) + 5.75f64.powi(2)) / 3.0)
                    .sqrt(),
            ),
        ),
    ];
    for (f, v) in want {
        q.downsample = Some(Downsample {
            interval_ns: H,
            function: f,
        });
        let r = db.query_sync(&q).unwrap();
        assert_eq!(r.times, vec![0, H], "{f:?}");
        let got = floats(&r, "x");
        assert_eq!(got[0], v, "{f:?}");
        let empty = if f == Aggregate::Count {
            Some(0.0)
        } else {
            None
        };
        assert_eq!(got[1], empty, "{f:?} of an empty bucket");
    }
    // Integers keep their type for sum/min/max/spread.
    q.fields = Fields::List(vec!["n".into()]);
    q.downsample = Some(Downsample {
        interval_ns: H,
        function: Aggregate::Sum,
    });
    let r = db.query_sync(&q).unwrap();
    assert_eq!(r.series("n").unwrap()[0].0, Some(&FieldValue::Int(6)));
}

#[test]
fn downsampling_aligns_buckets_to_the_epoch_and_honours_where_and_limit() {
    let db = Embedded::in_memory();
    db.write_sync(&spec_data()).unwrap();
    let mut q = Query::new("telemetry", IMEI, 2 * H, 30 * H);
    q.fields = Fields::List(vec!["current".into()]);
    q.downsample = Some(Downsample {
        interval_ns: 24 * H,
        function: Aggregate::Max,
    });
    let r = db.query_sync(&q).unwrap();
    assert_eq!(r.times, vec![0, 24 * H]);
    assert_eq!(floats(&r, "current"), vec![Some(3.234), Some(2.91)]);
    q.filter = Some(parse_where("voltage < 14").unwrap());
    let r = db.query_sync(&q).unwrap();
    assert_eq!(floats(&r, "current"), vec![Some(2.678), Some(2.91)]);
    q.limit = Some(1);
    assert_eq!(db.query_sync(&q).unwrap().times, vec![0]);
}

#[test]
fn tags_select_series_and_several_series_merge() {
    let db = Embedded::in_memory();
    let mut a = pt(1, &[("x", FieldValue::Int(1))]);
    a.tags.insert("source".into(), "a".into());
    let mut b = pt(2, &[("x", FieldValue::Int(2))]);
    b.tags.insert("source".into(), "b".into());
    db.write_sync(&[a, b]).unwrap();
    let mut q = Query::new("telemetry", IMEI, 0, 10);
    assert_eq!(db.query_sync(&q).unwrap().times, vec![1, 2]);
    q.tags.insert("source".into(), "b".into());
    let r = db.query_sync(&q).unwrap();
    assert_eq!(r.times, vec![2]);
    assert_eq!(r.tags.get("source").map(String::as_str), Some("b"));
    q.tags.clear();
    q.filter = Some(parse_where("source = 'a'").unwrap());
    assert_eq!(db.query_sync(&q).unwrap().times, vec![1]);
}

#[test]
fn rewrites_overwrite_and_late_points_are_sorted_in() {
    let db = Embedded::in_memory();
    db.write_sync(&[
        pt(10, &[("x", FieldValue::Float(1.0))]),
        pt(30, &[("x", FieldValue::Float(3.0))]),
    ])
    .unwrap();
    db.write_sync(&[
        pt(20, &[("x", FieldValue::Float(2.0))]),
        pt(10, &[("x", FieldValue::Float(1.5))]),
    ])
    .unwrap();
    let r = db
        .query_sync(&Query::new("telemetry", IMEI, 0, 100))
        .unwrap();
    assert_eq!(r.times, vec![10, 20, 30]);
    assert_eq!(floats(&r, "x"), vec![Some(1.5), Some(2.0), Some(3.0)]);
    assert_eq!(db.value_count(), 3);
}

#[test]
fn types_reconcile_or_conflict() {
    let db = Embedded::in_memory();
    db.write_sync(&[pt(1, &[("x", FieldValue::Int(1))])])
        .unwrap();
    db.write_sync(&[pt(2, &[("x", FieldValue::Float(2.5))])])
        .unwrap();
    let r = db
        .query_sync(&Query::new("telemetry", IMEI, 0, 10))
        .unwrap();
    assert_eq!(floats(&r, "x"), vec![Some(1.0), Some(2.5)]);
    let e = db
        .write_sync(&[pt(
            3,
            &[
                ("x", FieldValue::Str("s".into())),
                ("y", FieldValue::Bool(true)),
            ],
        )])
        .unwrap_err();
    assert!(e.to_string().contains("conflict"), "{e}");
    // The rest of the batch was kept.
    let r = db
        .query_sync(&Query::new("telemetry", IMEI, 0, 10))
        .unwrap();
    assert_eq!(
        r.series("y")
            .unwrap()
            .iter()
            .filter(|(v, _)| v.is_some())
            .count(),
        1
    );
}

fn temp_dir(line: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tsdb-test-{}-{line}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn on_disk(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        data_dir: Some(dir.to_owned()),
        fsync: false,
        shards: 4,
        ..EmbeddedConfig::default()
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    let wal = dir.join("wal");
    let id = wal::segment_ids(&wal).unwrap().into_iter().max().unwrap();
    wal.join(format!("{id:020}.log"))
}

fn everything(db: &Embedded) -> QueryResult {
    db.query_sync(&Query::new("telemetry", IMEI, -1000 * H, 1000 * H))
        .unwrap()
}

#[test]
fn the_log_survives_a_restart_and_a_torn_tail() {
    let dir = temp_dir(line!());
    let config = on_disk(&dir);
    {
        let db = Embedded::open(config.clone()).unwrap();
        db.write_sync(&spec_data()).unwrap();
        let mut s = pt(
            5,
            &[
                ("log", FieldValue::Str("héllo".into())),
                ("ok", FieldValue::Bool(true)),
            ],
        );
        s.tags.insert("k".into(), "v".into());
        db.write_sync(&[s]).unwrap();
    }
    let before = {
        let db = Embedded::open(config.clone()).unwrap();
        db.query_sync(&Query::new("telemetry", IMEI, 0, 100 * H))
            .unwrap()
    };
    assert_eq!(before.times.len(), 14);
    // A crash in the middle of an append leaves half a record.
    let path = last_segment(&dir);
    let len = std::fs::metadata(&path).unwrap().len();
    {
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    }
    let db = Embedded::open(config.clone()).unwrap();
    assert_eq!(
        db.query_sync(&Query::new("telemetry", IMEI, 0, 100 * H))
            .unwrap(),
        before
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "torn tail cut off"
    );
    db.write_sync(&[pt(200 * H, &[("x", FieldValue::Int(1))])])
        .unwrap();
    drop(db);
    let db = Embedded::open(config).unwrap();
    assert_eq!(
        db.query_sync(&Query::new("telemetry", IMEI, 0, 300 * H))
            .unwrap()
            .times
            .len(),
        15
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_record_before_the_end_fails_the_open() {
    let dir = temp_dir(line!());
    let config = on_disk(&dir);
    {
        let db = Embedded::open(config.clone()).unwrap();
        db.write_sync(&spec_data()).unwrap();
        db.write_sync(&spec_data()).unwrap();
    }
    let path = last_segment(&dir);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0xff; // inside the first record's payload
    std::fs::write(&path, bytes).unwrap();
    let err = Embedded::open(config)
        .err()
        .expect("a damaged log must not open");
    assert!(err.to_string().contains("damaged record"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flushed_blocks_answer_like_the_head_and_the_log_is_emptied() {
    let dir = temp_dir(line!());
    let config = on_disk(&dir);
    let db = Embedded::open(config.clone()).unwrap();
    let mut data = spec_data();
    // Two series of the same unit, and a value of every type.
    let mut tagged = pt(
        7 * H,
        &[
            ("s", FieldValue::Str("x".into())),
            ("b", FieldValue::Bool(false)),
            ("i", FieldValue::Int(-3)),
        ],
    );
    tagged.tags.insert("port".into(), "2".into());
    data.push(tagged);
    // Another unit, and a day before the epoch.
    let mut other = pt(-30 * H, &[("current", FieldValue::Float(9.0))]);
    other.imei = "other".into();
    data.push(other);
    db.write_sync(&data).unwrap();
    let mut tag_q = Query::new("telemetry", IMEI, 0, 100 * H);
    tag_q.tags.insert("port".into(), "2".into());
    let mut ds_q = Query::new("telemetry", IMEI, 0, 100 * H);
    ds_q.downsample = Some(Downsample {
        interval_ns: 24 * H,
        function: Aggregate::Mean,
    });
    let queries = [
        Query::new("telemetry", IMEI, 0, 100 * H),
        tag_q,
        ds_q,
        Query::new("telemetry", "other", -100 * H, 0),
    ];
    let before: Vec<QueryResult> = queries.iter().map(|q| db.query_sync(q).unwrap()).collect();
    assert_eq!(before[1].times, vec![7 * H]);
    assert_eq!(before[3].times, vec![-30 * H]);

    db.flush().unwrap();
    // 52 h of data: three days of telemetry for the unit, one day for the other unit.
    assert_eq!(db.block_count(), 4);
    assert_eq!(db.inner.current().head.count(), 0);
    assert!(
        std::fs::metadata(last_segment(&dir)).unwrap().len() <= 8,
        "the log holds nothing once the head is in blocks"
    );
    let after: Vec<QueryResult> = queries.iter().map(|q| db.query_sync(q).unwrap()).collect();
    assert_eq!(after, before);
    assert_eq!(db.value_count(), 13 * 2 + 7 + 3 + 1);
    drop(db);
    // Reopened: nothing to replay, the same answers from blocks alone.
    let db = Embedded::open(config).unwrap();
    assert_eq!(db.inner.current().head.count(), 0);
    let reopened: Vec<QueryResult> = queries.iter().map(|q| db.query_sync(q).unwrap()).collect();
    assert_eq!(reopened, before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn later_writes_win_across_head_and_blocks_and_compaction() {
    let dir = temp_dir(line!());
    let config = EmbeddedConfig {
        compact_at: 3,
        ..on_disk(&dir)
    };
    let db = Embedded::open(config.clone()).unwrap();
    let v = |t: i64, x: f64| pt(t, &[("v", FieldValue::Float(x))]);
    db.write_sync(&[v(H, 1.0), v(2 * H, 1.0)]).unwrap();
    db.flush().unwrap();
    db.write_sync(&[v(2 * H, 2.0), v(3 * H, 2.0)]).unwrap();
    db.flush().unwrap();
    assert_eq!(db.block_count(), 2);
    // Late and rewritten values in the head.
    db.write_sync(&[v(3 * H, 3.0), v(0, 3.0)]).unwrap();
    let expect = vec![Some(3.0), Some(1.0), Some(2.0), Some(3.0)];
    assert_eq!(floats(&everything(&db), "v"), expect);
    // The third block of the day merges all three, later values winning.
    db.flush().unwrap();
    assert_eq!(db.block_count(), 1);
    assert_eq!(db.value_count(), 4);
    assert_eq!(floats(&everything(&db), "v"), expect);
    drop(db);
    let db = Embedded::open(config).unwrap();
    assert_eq!(floats(&everything(&db), "v"), expect);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_head_is_written_out_by_itself_and_memory_stays_bounded() {
    let dir = temp_dir(line!());
    let config = EmbeddedConfig {
        head_values: 1_000,
        compact_at: 1_000,
        ..on_disk(&dir)
    };
    let db = Embedded::open(config).unwrap();
    let mut most = 0;
    for round in 0..40 {
        let batch: Vec<Point> = (0..50)
            .map(|i| {
                pt(
                    (round * 50 + i) * 60_000_000_000,
                    &[("v", FieldValue::Int(round * 50 + i))],
                )
            })
            .collect();
        db.write_sync(&batch).unwrap();
        let view = db.inner.current();
        most = most.max(view.head.count() + view.frozen.map_or(0, |f| f.count()));
    }
    // Let the background flusher finish (a fresh head alone does not mean
    // the frozen one is in blocks yet).
    let deadline = Instant::now() + Duration::from_secs(10);
    while (db.block_count() == 0 || db.inner.current().frozen.is_some())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(db.block_count() >= 1, "the flusher wrote blocks");
    assert!(most <= 3 * 1_000, "head + frozen held {most} values");
    let r = everything(&db);
    assert_eq!(r.times.len(), 2_000);
    assert_eq!(
        r.series("v").unwrap().last().unwrap().0,
        Some(&FieldValue::Int(1_999))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A read that took its snapshot before a compaction still reads every block the snapshot
/// lists (their files are deleted when the last snapshot goes), and a block kept open is
/// never answered from a file that a merge replaced.
#[test]
fn reads_keep_their_blocks_through_compaction_and_open_blocks_follow_merges() {
    let dir = temp_dir(line!());
    let db = Embedded::open(on_disk(&dir)).unwrap();
    let v = |t: i64, x: f64| pt(t, &[("v", FieldValue::Float(x))]);
    for batch in [
        vec![v(H, 1.0)],
        vec![v(2 * H, 2.0)],
        vec![v(3 * H, 3.0), v(H, 1.5)],
    ] {
        db.write_sync(&batch).unwrap();
        db.flush().unwrap();
    }
    assert_eq!(db.block_count(), 3);
    let expect = vec![Some(1.5), Some(2.0), Some(3.0)];
    // Every block is read, and kept open.
    assert_eq!(floats(&everything(&db), "v"), expect);
    // A read's snapshot of the blocks (its head left out).
    let in_flight = View {
        head: Arc::new(Head::new(1)),
        frozen: None,
        blocks: Arc::clone(&db.inner.current().blocks),
        months: Arc::default(),
    };
    let paths: Vec<PathBuf> = in_flight.blocks.iter().map(|b| b.path.clone()).collect();
    // The day is closed: its blocks merge into one, in the last one's path.
    db.inner.close_days(i64::MAX / 2).unwrap();
    assert_eq!(db.block_count(), 1);
    assert!(
        paths.iter().all(|p| p.exists()),
        "a snapshot taken before the merge keeps its files"
    );
    let old: Vec<&LiveBlock> = in_flight.blocks.iter().map(|b| &**b).collect();
    let q = Query::new("telemetry", IMEI, -1000 * H, 1000 * H);
    let series = gather(&q, &in_flight, &old, &db.inner.open).unwrap();
    assert_eq!(series[0].columns["v"].times(), [H, 2 * H, 3 * H]);
    drop(series);
    drop(old);
    drop(in_flight);
    assert!(
        !paths[0].exists() && !paths[1].exists() && paths[2].exists(),
        "merged-away blocks are deleted with the last snapshot that listed them: {paths:?}"
    );
    // The merged block, in the path of a block read and kept open before the merge, answers
    // with every merged value (the file it replaced lacks the value at 2 h).
    assert_eq!(floats(&everything(&db), "v"), expect);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With no block kept open (`open_blocks = 0`, the benchmark's baseline), every read opens its
/// blocks again and answers the same.
#[test]
fn reads_answer_the_same_with_no_block_kept_open() {
    let dir = temp_dir(line!());
    let db = Embedded::open(EmbeddedConfig {
        open_blocks: 0,
        ..on_disk(&dir)
    })
    .unwrap();
    db.write_sync(&spec_data()).unwrap();
    let from_head = everything(&db);
    db.flush().unwrap();
    assert!(db.block_count() > 0);
    for _ in 0..2 {
        assert_eq!(everything(&db), from_head);
    }
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One store a directory: a second open is refused while the first is open, and a dropped
/// store has stopped writing (its flusher joined), so the directory opens again at once.
#[test]
fn a_directory_holds_one_open_store_and_a_dropped_one_writes_nothing_more() {
    let dir = temp_dir(line!());
    let db = Embedded::open(on_disk(&dir)).unwrap();
    db.write_sync(&spec_data()).unwrap();
    let refused = Embedded::open(on_disk(&dir))
        .err()
        .expect("a second open is refused");
    assert!(refused.to_string().contains("open elsewhere"), "{refused}");
    drop(db);
    let db = Embedded::open(on_disk(&dir)).unwrap();
    assert_eq!(everything(&db).times.len(), 13);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retention_deletes_whole_days_of_its_measurement_only() {
    let dir = temp_dir(line!());
    let config = EmbeddedConfig {
        retention_days: [("telemetry".to_owned(), 2)].into(),
        ..on_disk(&dir)
    };
    let db = Embedded::open(config).unwrap();
    let day = 24 * H;
    let mut analysis = pt(0, &[("v", FieldValue::Int(1))]);
    analysis.measurement = "analysis".into();
    db.write_sync(&[
        pt(0, &[("v", FieldValue::Int(1))]),
        pt(5 * day, &[("v", FieldValue::Int(2))]),
        pt(9 * day + H, &[("v", FieldValue::Int(3))]),
        analysis,
    ])
    .unwrap();
    db.flush().unwrap();
    assert_eq!(db.block_count(), 4);
    // At day 10: days 0 to 7 are older than 2 days.
    db.inner.apply_retention(10 * day).unwrap();
    assert_eq!(db.block_count(), 2);
    let r = everything(&db);
    assert_eq!(r.times, vec![9 * day + H]);
    let a = db.query_sync(&Query::new("analysis", IMEI, 0, H)).unwrap();
    assert_eq!(
        a.times,
        vec![0],
        "no retention set for analysis: kept forever"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_old_single_log_is_taken_over() {
    let dir = temp_dir(line!());
    std::fs::create_dir_all(&dir).unwrap();
    // The old format: one `tsdb.log`, the same records.
    let mut payload = Vec::new();
    wal::encode_batch(&mut payload, &spec_data());
    let mut log = b"SSTSDB01".to_vec();
    log.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    log.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    log.extend_from_slice(&payload);
    std::fs::write(dir.join("tsdb.log"), log).unwrap();
    let db = Embedded::open(on_disk(&dir)).unwrap();
    assert_eq!(everything(&db).times.len(), 13);
    assert!(!dir.join("tsdb.log").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn blocks_are_plain_parquet_with_named_columns() {
    let dir = temp_dir(line!());
    let db = Embedded::open(on_disk(&dir)).unwrap();
    db.write_sync(&spec_data()).unwrap();
    db.flush().unwrap();
    let b = db.inner.current().blocks[0].clone();
    let file = std::fs::File::open(&b.path).unwrap();
    let r = parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let schema = r.metadata().file_metadata().schema_descr();
    let names: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "imei",
            "tags",
            "field",
            "time",
            "value_float",
            "value_int",
            "value_str",
            "value_bool"
        ]
    );
    assert!(b
        .path
        .starts_with(dir.join("blocks").join(hex::encode("telemetry"))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_bad_points_and_queries() {
    let db = Embedded::in_memory();
    assert!(db.write_sync(&[pt(1, &[])]).is_err());
    assert!(db
        .write_sync(&[pt(1, &[("x", FieldValue::Float(f64::INFINITY))])])
        .is_err());
    let mut q = Query::new("telemetry", IMEI, 10, 0);
    assert!(db.query_sync(&q).is_err());
    q.end_ns = 100 * 365 * 24 * H;
    q.start_ns = 0;
    q.downsample = Some(Downsample {
        interval_ns: 1000,
        function: Aggregate::Mean,
    });
    assert!(db.query_sync(&q).is_err(), "too many buckets");
}

/// Three days and a bit of one unit every 10 minutes: a float, an integer,
/// a string; two values of the second day rewritten after the flush (so
/// that day is read raw), one point of another series.
fn rollup_data() -> (Vec<Point>, Vec<Point>) {
    let step = 600_000_000_000;
    let mut first = Vec::new();
    for i in 0..(3 * 24 * 6 + 20) {
        let t = i * step;
        first.push(pt(
            t,
            &[
                ("f", FieldValue::Float(((i * 37) % 101) as f64 / 7.0)),
                ("i", FieldValue::Int((i * 13) % 17 - 8)),
                ("s", FieldValue::Str(format!("s{i}"))),
            ],
        ));
    }
    let later = vec![
        pt(24 * H + step, &[("f", FieldValue::Float(1000.0))]),
        pt(30 * H, &[("i", FieldValue::Int(-1000))]),
    ];
    (first, later)
}

/// The same answer, floats equal but for rounding (rollups add sums of
/// hours where the raw path adds values one by one).
fn assert_close(a: &QueryResult, b: &QueryResult, what: &str) {
    assert_eq!(a.times, b.times, "{what}");
    assert_eq!(a.columns.len(), b.columns.len(), "{what}");
    for ((fa, va), (fb, vb)) in a.columns.iter().zip(&b.columns) {
        assert_eq!(fa, fb, "{what}");
        assert_eq!(va.len(), vb.len(), "{what} {fa}");
        for (x, y) in va.iter().zip(vb) {
            match (x, y) {
                (Some(FieldValue::Float(x)), Some(FieldValue::Float(y))) => {
                    assert!((x - y).abs() < 1e-9, "{what} {fa}: {x} vs {y}")
                }
                _ => assert_eq!(x, y, "{what} {fa}"),
            }
        }
    }
}

#[test]
fn rollups_answer_downsampled_queries_like_the_raw_values() {
    let dir = temp_dir(line!());
    let db = Embedded::open(on_disk(&dir)).unwrap();
    let reference = Embedded::in_memory();
    let (first, later) = rollup_data();
    for store in [&db, &reference] {
        store.write_sync(&first).unwrap();
    }
    db.flush().unwrap();
    for store in [&db, &reference] {
        store.write_sync(&later).unwrap();
    }
    let close = assert_close;
    for f in [
        Aggregate::Mean,
        Aggregate::Count,
        Aggregate::Sum,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Spread,
        Aggregate::Median,
    ] {
        for (start, end, every) in [
            (0, 4 * 24 * H, H),
            (0, 4 * 24 * H, 24 * H),
            (-5 * H, 100 * H, 3 * H),
            (H / 2, 3 * 24 * H - 1, 6 * H),
        ] {
            let mut q = Query::new("telemetry", IMEI, start, end);
            q.downsample = Some(Downsample {
                interval_ns: every,
                function: f,
            });
            let what = format!("{f:?} {start}..{end} every {every}");
            close(
                &db.query_sync(&q).unwrap(),
                &reference.query_sync(&q).unwrap(),
                &what,
            );
            q.fields = Fields::List(vec!["i".into(), "nothing".into()]);
            q.limit = Some(30);
            close(
                &db.query_sync(&q).unwrap(),
                &reference.query_sync(&q).unwrap(),
                &what,
            );
        }
    }
    // Proof that whole days come from the rollups: without day 0's raw
    // block, a downsampled read still answers; a raw read cannot.
    let day0 = db
        .inner
        .current()
        .blocks
        .iter()
        .find(|b| b.day == 0)
        .unwrap()
        .clone();
    std::fs::remove_file(&day0.path).unwrap();
    db.inner.open.clear(); // a block kept open would still answer
    let mut q = Query::new("telemetry", IMEI, 0, 4 * 24 * H);
    q.downsample = Some(Downsample {
        interval_ns: 24 * H,
        function: Aggregate::Max,
    });
    close(
        &db.query_sync(&q).unwrap(),
        &reference.query_sync(&q).unwrap(),
        "max from rollups",
    );
    assert!(db
        .query_sync(&Query::new("telemetry", IMEI, 0, 4 * 24 * H))
        .is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rollups_are_not_used_for_several_series() {
    let dir = temp_dir(line!());
    let db = Embedded::open(on_disk(&dir)).unwrap();
    let reference = Embedded::in_memory();
    let mut a = pt(H, &[("v", FieldValue::Int(1))]);
    a.tags.insert("port".into(), "1".into());
    let mut b = pt(2 * H, &[("v", FieldValue::Int(5))]);
    b.tags.insert("port".into(), "2".into());
    for store in [&db, &reference] {
        store.write_sync(&[a.clone(), b.clone()]).unwrap();
    }
    db.flush().unwrap();
    for f in [Aggregate::Sum, Aggregate::Count, Aggregate::Mean] {
        let mut q = Query::new("telemetry", IMEI, 0, 24 * H - 1);
        q.downsample = Some(Downsample {
            interval_ns: 24 * H,
            function: f,
        });
        assert_eq!(
            db.query_sync(&q).unwrap(),
            reference.query_sync(&q).unwrap()
        );
        q.tags.insert("port".into(), "2".into());
        assert_eq!(
            db.query_sync(&q).unwrap(),
            reference.query_sync(&q).unwrap()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_day_is_merged_into_one_block_with_exact_rollups() {
    let dir = temp_dir(line!());
    let db = Embedded::open(on_disk(&dir)).unwrap();
    let reference = Embedded::in_memory();
    let v = |t: i64, x: i64| pt(t, &[("v", FieldValue::Int(x))]);
    let batches = [
        vec![v(H, 1), v(2 * H, 2), v(25 * H, 7)],
        vec![v(2 * H, 20), v(3 * H, 3)], // rewrites 2 h
    ];
    for b in &batches {
        db.write_sync(b).unwrap();
        reference.write_sync(b).unwrap();
        db.flush().unwrap();
    }
    assert_eq!(db.block_count(), 3, "day 0 twice, day 1 once");
    // Day 0 ended less than an hour ago: left alone.
    db.inner.close_days(24 * H + H / 2).unwrap();
    assert_eq!(db.block_count(), 3);
    db.inner.close_days(25 * H).unwrap();
    assert_eq!(db.block_count(), 2);
    let mut q = Query::new("telemetry", IMEI, 0, 48 * H - 1);
    q.downsample = Some(Downsample {
        interval_ns: 24 * H,
        function: Aggregate::Sum,
    });
    let expect = reference.query_sync(&q).unwrap();
    assert_eq!(
        expect.series("v").unwrap()[0].0,
        Some(&FieldValue::Int(1 + 20 + 3))
    );
    assert_eq!(db.query_sync(&q).unwrap(), expect);
    // Day 0's sum now comes from its rollups alone.
    let day0 = db
        .inner
        .current()
        .blocks
        .iter()
        .find(|b| b.day == 0)
        .unwrap()
        .clone();
    std::fs::remove_file(&day0.path).unwrap();
    db.inner.open.clear(); // a block kept open would still answer
    assert_eq!(db.query_sync(&q).unwrap(), expect);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Many reads at once of the same blocks kept open answer exactly what one read alone does:
/// a kept-open block is shared by concurrent queries, and its reads must not move each
/// other's place in the file (they did through parquet's `ChunkReader for File`).
#[test]
fn concurrent_reads_of_kept_open_blocks_answer_alike() {
    let dir = temp_dir(line!());
    let db = Arc::new(Embedded::open(on_disk(&dir)).unwrap());
    // Enough rows for several pages per column, in two blocks.
    for half in 0..2i64 {
        let batch: Vec<Point> = (0..20_000i64)
            .map(|i| {
                let t = (half * 20_000 + i) * 1_000_000_000;
                pt(
                    t,
                    &[
                        ("v", FieldValue::Float(i as f64 * 0.5)),
                        ("n", FieldValue::Int(i * 7)),
                        ("s", FieldValue::Str(format!("state-{}", i % 13))),
                    ],
                )
            })
            .collect();
        db.write_sync(&batch).unwrap();
        db.flush().unwrap();
    }
    assert!(db.block_count() >= 2);
    let alone = Arc::new(everything(&db));
    assert_eq!(alone.times.len(), 40_000);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (db, alone) = (Arc::clone(&db), Arc::clone(&alone));
            std::thread::spawn(move || {
                for _ in 0..15 {
                    let r = db
                        .query_sync(&Query::new("telemetry", IMEI, -1000 * H, 1000 * H))
                        .expect("a concurrent read fails");
                    assert!(r == *alone, "a concurrent read answered differently");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a reading thread panicked");
    }
    assert_eq!(everything(&db), *alone);
    let _ = std::fs::remove_dir_all(&dir);
}

const D: i64 = 24 * H;

/// A "now" at which every day written in these tests is closed.
const LATER: i64 = i64::MAX / 2;

fn measurement_dir(dir: &Path) -> PathBuf {
    dir.join("blocks").join(hex::encode("telemetry"))
}

/// The files anywhere under `dir/blocks/<telemetry>/` that `pick` accepts.
fn files_under(dir: &Path, pick: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![measurement_dir(dir)];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if pick(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The month files of daily rollups (`1d/<yyyy>/<yyyy-mm>.parquet`).
fn month_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir, |p| {
        p.extension().is_some_and(|e| e == "parquet")
            && p.parent()
                .and_then(Path::parent)
                .is_some_and(|d| d.ends_with("1d"))
    })
}

/// The hourly rollup files (`<day>/1h/<seq>.parquet`).
fn hourly_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir, |p| p.parent().is_some_and(|d| d.ends_with("1h")))
}

fn whole_day(start: i64, end: i64, every: i64, function: Aggregate) -> Query {
    let mut q = Query::new("telemetry", IMEI, start, end);
    q.downsample = Some(Downsample {
        interval_ns: every,
        function,
    });
    q
}

/// One unit every 2 hours from day 20 to day 95 (1970-01-21 to 1970-04-05:
/// four months): a float, an integer, a string; a second unit an hour
/// later. Flushed in two parts that overlap on day 50, so that day is two
/// blocks until it is closed.
fn write_months(db: &Embedded, reference: &Embedded) {
    let point = |imei: &str, t: i64| {
        let i = t / (2 * H);
        let mut p = pt(
            t,
            &[
                ("f", FieldValue::Float(((i * 37) % 101) as f64 / 7.0)),
                ("i", FieldValue::Int((i * 13) % 17 - 8)),
                ("s", FieldValue::Str(format!("s{i}"))),
            ],
        );
        p.imei = imei.into();
        p
    };
    let all: Vec<Point> = (20 * D..96 * D)
        .step_by(2 * H as usize)
        .flat_map(|t| [point(IMEI, t), point("other", t + H)])
        .collect();
    let first: Vec<Point> = all
        .iter()
        .filter(|p| p.time_ns < 50 * D + 12 * H)
        .cloned()
        .collect();
    let second: Vec<Point> = all
        .iter()
        .filter(|p| p.time_ns >= 50 * D)
        .cloned()
        .collect();
    for part in [first, second] {
        db.write_sync(&part).unwrap();
        reference.write_sync(&part).unwrap();
        db.flush().unwrap();
    }
}

/// Whole-day downsampled reads: every function rollups answer, ranges that
/// start and end mid-month and mid-day, whole months, several days a bucket.
fn whole_day_queries() -> Vec<Query> {
    let mut out = Vec::new();
    for f in [
        Aggregate::Mean,
        Aggregate::Count,
        Aggregate::Sum,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Spread,
    ] {
        for (start, end, every) in [
            (0, 120 * D, D),
            (25 * D + 5 * H, 80 * D + 7 * H, D),
            (31 * D, 59 * D - 1, D),
            (20 * D + H, 95 * D, 2 * D),
            (-3 * D, 100 * D + 1, 7 * D),
        ] {
            let mut q = whole_day(start, end, every, f);
            out.push(q.clone());
            q.fields = Fields::List(vec!["i".into(), "nothing".into()]);
            q.limit = Some(30);
            out.push(q);
        }
    }
    out
}

#[test]
fn daily_rollups_in_month_files_answer_like_the_raw_values() {
    let dir = temp_dir(line!());
    let config = on_disk(&dir);
    let db = Embedded::open(config.clone()).unwrap();
    let reference = Embedded::in_memory();
    write_months(&db, &reference);
    let check = |db: &Embedded, what: &str| {
        for q in whole_day_queries() {
            assert_close(
                &db.query_sync(&q).unwrap(),
                &reference.query_sync(&q).unwrap(),
                &format!("{what}: {q:?}"),
            );
        }
    };
    check(&db, "before any month file");
    db.inner.close_days(LATER).unwrap();
    db.inner.roll_up_days(LATER).unwrap();
    assert_eq!(month_files(&dir).len(), 4, "January to April 1970");
    check(&db, "from month files");
    assert!(db.inner.open.opened(live::Kind::Daily) > 0);

    // A value of a closed day rewritten: in the head, then a second block of
    // that day, then merged into one, then its month file rewritten.
    let late = [pt(
        40 * D + 2 * H,
        &[
            ("f", FieldValue::Float(1000.0)),
            ("i", FieldValue::Int(-1000)),
        ],
    )];
    for store in [&db, &reference] {
        store.write_sync(&late).unwrap();
    }
    check(&db, "a rewritten day in the head");
    db.flush().unwrap();
    check(&db, "a rewritten day in two blocks");
    db.inner.close_days(LATER).unwrap();
    check(&db, "a rewritten day merged, its month file behind");
    db.inner.roll_up_days(LATER).unwrap();
    check(&db, "a rewritten day merged, its month file rewritten");

    // Whole days come from the month files alone: with no hourly rollup file
    // left, whole-day reads answer the same (the partial days read blocks).
    for f in hourly_files(&dir) {
        std::fs::remove_file(f).unwrap();
    }
    db.inner.open.clear();
    check(&db, "no hourly rollups left");
    // Reopened: month files are listed, their days read from their footers.
    drop(db);
    let db = Embedded::open(config).unwrap();
    check(&db, "reopened");
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store on disk and a memory-only reference, both given `points`; the
/// store's head written out as blocks and its closed days rolled up by month.
fn stored_with_reference(config: EmbeddedConfig, points: &[Point]) -> (Embedded, Embedded) {
    let db = Embedded::open(config).unwrap();
    let reference = Embedded::in_memory();
    for store in [&db, &reference] {
        store.write_sync(points).unwrap();
    }
    db.flush().unwrap();
    db.inner.roll_up_days(LATER).unwrap();
    (db, reference)
}

/// The design's point: a year at 1 d reads about one file a month, not the
/// hourly rollups of 365 day blocks (which do not fit the 128 kept open).
#[test]
fn a_year_at_one_day_reads_a_file_a_month() {
    let dir = temp_dir(line!());
    let config = on_disk(&dir);
    let t0 = 19_723 * D; // 2024-01-01
    let points: Vec<Point> = (0..380 * 8)
        .map(|i| {
            pt(
                t0 + i * 3 * H,
                &[
                    ("v", FieldValue::Float((i % 29) as f64 * 0.5)),
                    ("n", FieldValue::Int(i % 7)),
                ],
            )
        })
        .collect();
    let (db, reference) = stored_with_reference(config.clone(), &points);
    drop(db);
    // Nothing open yet.
    let db = Embedded::open(config).unwrap();
    // From mid-January at 06:00, 365 days: 13 months, two partial days.
    let q = whole_day(
        t0 + 14 * D + 6 * H,
        t0 + 379 * D + 6 * H,
        D,
        Aggregate::Mean,
    );
    assert_close(
        &db.query_sync(&q).unwrap(),
        &reference.query_sync(&q).unwrap(),
        "a year at 1 d",
    );
    let opened = |k| db.inner.open.opened(k);
    let (daily, hourly, values) = (
        opened(live::Kind::Daily),
        opened(live::Kind::Hourly),
        opened(live::Kind::Values),
    );
    assert!(
        daily <= 13 && hourly == 0 && values <= 2,
        "a year at 1 d opened {daily} month files, {hourly} hourly rollup files, {values} blocks"
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retention_takes_expired_days_out_of_their_month_files() {
    let dir = temp_dir(line!());
    let config = EmbeddedConfig {
        retention_days: [("telemetry".to_owned(), 30)].into(),
        ..on_disk(&dir)
    };
    let points: Vec<Point> = (0..70 * 4)
        .map(|i| pt(i * 6 * H, &[("v", FieldValue::Int(i % 11))]))
        .collect();
    let (db, reference) = stored_with_reference(config, &points);
    assert_eq!(month_files(&dir).len(), 3, "January to March 1970");
    // At day 75, 30 days kept: days 0 to 44 go.
    db.inner.apply_retention(75 * D).unwrap();
    let files = month_files(&dir);
    assert_eq!(files.len(), 2, "January is gone: {files:?}");
    let february = block::Reader::open(&files[0]).unwrap();
    let days: Vec<i64> = daily::days_in(&february).unwrap().into_keys().collect();
    assert_eq!(
        days,
        (45..59).collect::<Vec<_>>(),
        "February keeps its last 14 days"
    );
    let q = whole_day(45 * D, 70 * D, D, Aggregate::Sum);
    assert_eq!(
        db.query_sync(&q).unwrap(),
        reference.query_sync(&q).unwrap()
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store opened on data without month files (older data, or files lost)
/// answers from hourly rollups and builds them; a crash's leftover
/// `*.tmp` is deleted on open; a damaged month file is not read, and rebuilt.
#[test]
fn month_files_missing_damaged_or_half_written_are_rebuilt() {
    let dir = temp_dir(line!());
    let config = on_disk(&dir);
    let points: Vec<Point> = (0..40 * 4)
        .map(|i| pt(i * 6 * H, &[("v", FieldValue::Float(i as f64 / 3.0))]))
        .collect();
    let (db, reference) = stored_with_reference(config.clone(), &points);
    let q = whole_day(0, 41 * D, D, Aggregate::Max);
    let expect = reference.query_sync(&q).unwrap();
    assert_eq!(db.query_sync(&q).unwrap(), expect);
    drop(db);

    let daily_dir = measurement_dir(&dir).join("1d");
    std::fs::remove_dir_all(&daily_dir).unwrap();
    let tmp = daily_dir.join("1970").join("1970-01.parquet.tmp");
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    std::fs::write(&tmp, b"half a month").unwrap();
    let db = Embedded::open(config.clone()).unwrap();
    assert!(
        !tmp.exists(),
        "a leftover temporary month file is deleted on open"
    );
    assert_eq!(db.query_sync(&q).unwrap(), expect);
    assert_eq!(db.inner.open.opened(live::Kind::Daily), 0);
    db.inner.roll_up_days(LATER).unwrap();
    assert_eq!(month_files(&dir).len(), 2);
    drop(db);

    let january = month_files(&dir)[0].clone();
    std::fs::write(&january, b"not parquet").unwrap();
    let db = Embedded::open(config).unwrap();
    assert_eq!(
        db.query_sync(&q).unwrap(),
        expect,
        "a damaged month file is not read"
    );
    db.inner.roll_up_days(LATER).unwrap();
    let rebuilt = block::Reader::open(&january).unwrap();
    assert_eq!(daily::days_in(&rebuilt).unwrap().len(), 31);
    assert_eq!(db.query_sync(&q).unwrap(), expect);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}
