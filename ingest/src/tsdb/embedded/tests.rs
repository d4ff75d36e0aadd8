use super::*;
use crate::tsdb::{parse_where, Downsample};

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

#[test]
fn the_log_survives_a_restart_and_a_torn_tail() {
    let dir = std::env::temp_dir().join(format!("tsdb-test-{}-{}", std::process::id(), line!()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = EmbeddedConfig {
        data_dir: Some(dir.clone()),
        fsync: false,
        shards: 4,
    };
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
    let path = dir.join("tsdb.log");
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
