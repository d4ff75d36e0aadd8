//! The InfluxDB 1.x backend against a real server, and parity with the
//! embedded store on the same data and queries.
//!
//! The server is `SMARTSOLAR_TEST_INFLUX_URL` (default
//! `http://127.0.0.1:8086`), started by `scripts/services.sh` (Debian's
//! `influxdb`). These tests FAIL when it is not there.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use ingest::tsdb::embedded::Embedded;
use ingest::tsdb::influx::{Influx, InfluxConfig};
use ingest::tsdb::{
    parse_where, Aggregate, Downsample, FieldValue, Fields, Point, Query, QueryResult, TimeSeries,
};

const H: i64 = 3_600_000_000_000;
const BASE: i64 = 1_451_606_400_000_000_000; // 2016-01-01T00:00:00Z
const IMEI: &str = "000000000000000";

async fn influx() -> Influx {
    let url = std::env::var("SMARTSOLAR_TEST_INFLUX_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8086".into());
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Influx::connect(InfluxConfig {
        url: url.clone(),
        database: format!("smartsolar_test_{}_{n}", std::process::id()),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| {
        panic!("no InfluxDB at {url} ({e}): start it with `scripts/services.sh start`")
    })
}

fn data() -> Vec<Point> {
    let current = [
        1.234, 2.234, 3.234, 1.234, 2.345, 2.678, 2.91, 2.345, 2.678, 2.91, 2.345, 2.678, 2.91,
    ];
    let voltage = [
        14.243, 14.723, 14.826, 13.284, 12.345, 12.678, 12.91, 12.345, 12.678, 12.91, 12.345,
        12.678, 12.91,
    ];
    let mut out: Vec<Point> = (0..13)
        .map(|i| {
            let mut fields = vec![
                ("current".to_owned(), FieldValue::Float(current[i])),
                ("voltage".to_owned(), FieldValue::Float(voltage[i])),
                ("pulse_count".to_owned(), FieldValue::Int(i as i64 * 3)),
            ];
            if i % 2 == 0 {
                fields.push(("temperature".into(), FieldValue::Float(21.345)));
            }
            Point {
                measurement: "telemetry".into(),
                imei: IMEI.into(),
                tags: BTreeMap::new(),
                fields,
                time_ns: BASE + i as i64 * 4 * H,
            }
        })
        .collect();
    out.push(Point {
        measurement: "analysis".into(),
        imei: IMEI.into(),
        tags: BTreeMap::from([("analysis-type".into(), "state of health, \"v2\"".into())]),
        fields: vec![
            ("curve-data".into(), FieldValue::Float(4.0)),
            (
                "note".into(),
                FieldValue::Str("it's \"quoted\", with = and \\".into()),
            ),
            ("ok".into(), FieldValue::Bool(true)),
        ],
        time_ns: BASE + 5,
    });
    // Another unit, which must never show up.
    let mut other = out[0].clone();
    other.imei = "111111111111111".into();
    out.push(other);
    out
}

/// Values as numbers where numeric (InfluxDB's JSON loses int/float), else as given.
type Normalised = (Vec<i64>, Vec<(String, Vec<Option<String>>)>);

fn normalise(r: &QueryResult) -> Normalised {
    let cols = r
        .columns
        .iter()
        .map(|(n, vals)| {
            let v = vals
                .iter()
                .map(|v| {
                    v.as_ref().map(|v| match v.as_f64() {
                        Some(x) => format!("{:.9}", x),
                        None => format!("{v:?}"),
                    })
                })
                .collect();
            (n.clone(), v)
        })
        .collect();
    (r.times.clone(), cols)
}

fn queries() -> Vec<(&'static str, Query)> {
    let base = Query::new("telemetry", IMEI, BASE, BASE + 48 * H);
    let mut out = vec![("raw, all fields", base.clone())];
    let mut q = base.clone();
    q.end_ns = BASE + 24 * H;
    q.fields = Fields::List(vec!["current".into(), "temperature".into()]);
    q.filter = Some(parse_where("'voltage' > 14.0").unwrap());
    out.push(("spec where example", q.clone()));
    q.filter = Some(parse_where("voltage > 14 AND (current < 2 OR pulse_count >= 6)").unwrap());
    q.limit = Some(2);
    out.push(("nested where + limit", q));
    for f in Aggregate::ALL {
        let mut q = base.clone();
        q.start_ns = BASE + 2 * H;
        q.fields = Fields::List(vec![
            "current".into(),
            "pulse_count".into(),
            "temperature".into(),
        ]);
        q.downsample = Some(Downsample {
            interval_ns: 12 * H,
            function: f,
        });
        out.push((f.as_str(), q));
    }
    let mut q = base.clone();
    q.downsample = Some(Downsample {
        interval_ns: 24 * H,
        function: Aggregate::Max,
    });
    q.filter = Some(parse_where("voltage < 14").unwrap());
    q.fields = Fields::List(vec!["current".into()]);
    out.push(("downsample + where", q));
    let mut q = base.clone();
    q.downsample = Some(Downsample {
        interval_ns: 24 * H,
        function: Aggregate::Mean,
    });
    out.push(("downsample, all fields", q));
    let mut q = Query::new("telemetry", IMEI, BASE + 100 * H, BASE + 200 * H);
    q.fields = Fields::List(vec!["current".into()]);
    out.push(("empty range", q));
    out
}

#[tokio::test]
async fn influx_answers_like_the_embedded_store() {
    let db = influx().await;
    let emb = Embedded::in_memory();
    let points = data();
    db.write(&points).await.expect("influx write");
    emb.write(&points).await.unwrap();
    for (name, q) in queries() {
        let a = db.query(&q).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let b = emb.query(&q).await.unwrap();
        assert_eq!(normalise(&a), normalise(&b), "{name}: influx vs embedded");
        assert_eq!(a.tags, b.tags, "{name}");
        assert_eq!(a.times.is_empty(), name == "empty range", "{name}: {a:?}");
    }
}

#[tokio::test]
async fn escaping_round_trips_through_influx() {
    let db = influx().await;
    db.write(&data()).await.unwrap();
    let mut q = Query::new("analysis", IMEI, BASE, BASE + H);
    q.tags
        .insert("analysis-type".into(), "state of health, \"v2\"".into());
    let r = db.query(&q).await.unwrap();
    assert_eq!(r.times, vec![BASE + 5]);
    let note = r.series("note").unwrap()[0].0.cloned();
    assert_eq!(
        note,
        Some(FieldValue::Str("it's \"quoted\", with = and \\".into()))
    );
    assert_eq!(r.series("ok").unwrap()[0].0, Some(&FieldValue::Bool(true)));
    // A where on a string with quotes and backslashes.
    q.tags.clear();
    q.filter = Some(parse_where(r#"note = 'it\'s "quoted", with = and \\'"#).unwrap());
    assert_eq!(db.query(&q).await.unwrap().times, vec![BASE + 5]);
    // Hostile text stays data.
    q.filter = Some(parse_where(r#"note = '\' OR 1=1; DROP DATABASE x'"#).unwrap());
    assert!(db.query(&q).await.unwrap().times.is_empty());
}

#[tokio::test]
async fn ping_answers_with_a_server_and_fails_without_one() {
    influx()
        .await
        .ping()
        .await
        .expect("the test server answers");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nobody = Influx::connect(InfluxConfig {
        url: format!("http://{closed}"),
        create: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = nobody.ping().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}
