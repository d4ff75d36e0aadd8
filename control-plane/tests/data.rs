//! The product data API, `/upload_tool_log` and the RTC dead-letter actions
//! through real HTTP, on SQLite and on PostgreSQL, with the embedded
//! time-series store and the durable disk bus (`serve`'s default) in a temporary directory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, Consumer, DiskBus, DiskBusConfig, Topics};
use codec::envelope::{decode_bus_envelope, encode_dead_letter, BusEnvelope, DeadLetter};
use codec::{CorrelationId, QueueName, Transport};
use common::{link, urlencode, Backend, TestServer, ADMIN};
use ingest::tsdb::embedded::{Embedded, EmbeddedConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value as Json};

both_backends!(
    write_and_read_every_timestamp_form,
    downsampling_with_several_functions,
    fields_where_tags_and_limit,
    bad_input_gets_400_with_a_message,
    permissions_and_entity_scope,
    upload_tool_log,
    dead_letters_import_decode_replay_discard,
);

const IMEI: &str = "013777946874001";

struct Env {
    server: TestServer,
    bus: DiskBus,
    _tsdb: tempfile::TempDir,
    _bus_dir: tempfile::TempDir,
}

impl Env {
    async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tsdb = Embedded::open(EmbeddedConfig {
            data_dir: Some(dir.path().to_path_buf()),
            fsync: false,
            ..EmbeddedConfig::default()
        })
        .unwrap();
        let bus_dir = tempfile::tempdir().unwrap();
        let bus = DiskBus::open(bus_dir.path(), DiskBusConfig::default()).unwrap();
        let shared = bus.clone();
        let server = TestServer::start_with_state(backend, move |state| {
            state
                .with_timeseries(Arc::new(tsdb))
                .with_bus(Arc::new(shared), Topics::default())
        })
        .await;
        server.seed("product", json!({"product_imei": IMEI})).await;
        Self {
            server,
            bus,
            _tsdb: dir,
            _bus_dir: bus_dir,
        }
    }

    async fn write(&self, imei: &str, body: Json) -> (StatusCode, Json) {
        self.server
            .post(&format!("/v1/products/{imei}/data"), body)
            .await
    }

    /// Writes `body` for `imei`, which must be taken whole: 200, `points` points written.
    async fn write_points(&self, imei: &str, body: Json, points: usize) {
        let (s, answer) = self.write(imei, body).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        assert_eq!(
            answer["message"],
            format!("{points} data-point(s) successfully written to influx")
        );
    }

    /// GET with `(name, value)` query arguments.
    async fn read(&self, args: &[(&str, &str)]) -> (StatusCode, Json) {
        self.read_as(&self.server.token.clone(), IMEI, args).await
    }

    async fn read_as(&self, token: &str, imei: &str, args: &[(&str, &str)]) -> (StatusCode, Json) {
        let qs: Vec<String> = args
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        self.server
            .get_as(token, &format!("/v1/products/{imei}/data?{}", qs.join("&")))
            .await
    }
}

fn assert_ok(s: StatusCode, body: &Json) {
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success", "{body}");
}

/// The field names of a data answer (besides `measurement` and `tags`).
fn field_names(data: &Json) -> Vec<String> {
    data.as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "measurement" && *k != "tags")
        .cloned()
        .collect()
}

/// Values of one field as f64 (null as NaN), and its timestamps.
fn series(data: &Json, field: &str) -> (Vec<f64>, Vec<String>) {
    let rows = data[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {data}"));
    (
        rows.iter()
            .map(|r| r[0].as_f64().unwrap_or(f64::NAN))
            .collect(),
        rows.iter()
            .map(|r| r[1].as_str().unwrap().to_string())
            .collect(),
    )
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

/// The spec's write example, then each timestamp form read back.
async fn write_and_read_every_timestamp_form(backend: Backend) {
    let env = Env::start(backend).await;
    let (s, body) = env
        .write(
            IMEI,
            json!({
                "measurement": "telemetry",
                "tags": {"some_tag": "tag_value"},
                "fields": {
                    "current": [[1472688000000i64, 1.0], [1472774400000i64, 2.0], [1472860800000i64, 3.0]],
                    "voltage": [["2016-09-01T00:00:00Z", 10.0], ["2016-09-02 00:00:00", 20.0], ["2016-09-03", 30.0]],
                    "temperature": [["Thu, September 1st 2016", 0.1], ["Fri, September 2nd 2016", 0.2], ["Sat, September 3rd 2016", 0.3]]
                }
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"status": "success", "message": "9 data-point(s) successfully written to influx", "data": null})
    );

    // Start as epoch milliseconds, end in the spec's "sensible" form (inclusive).
    let (s, body) = env
        .read(&[
            ("start", "1472688000000"),
            ("end", "Sat, September 3rd 2016"),
        ])
        .await;
    assert_ok(s, &body);
    assert_eq!(body["message"], "data retrieved successfully");
    let data = &body["data"];
    assert_eq!(data["measurement"], "telemetry");
    assert_eq!(data["tags"], json!({"product_imei": IMEI}));
    let days = [
        "2016-09-01T00:00:00Z",
        "2016-09-02T00:00:00Z",
        "2016-09-03T00:00:00Z",
    ];
    assert_eq!(
        data["current"],
        json!([[1.0, days[0]], [2.0, days[1]], [3.0, days[2]]])
    );
    assert_eq!(
        data["voltage"],
        json!([[10.0, days[0]], [20.0, days[1]], [30.0, days[2]]])
    );
    assert_eq!(
        data["temperature"],
        json!([[0.1, days[0]], [0.2, days[1]], [0.3, days[2]]])
    );

    // Nanoseconds survive both ISO forms; a bare date and a human date are midnight.
    env.write_points(
        IMEI,
        json!({"fields": {"precise": [
            ["2016-09-04T01:02:03.123456789Z", 1],
            ["2016-09-04 01:02:04.5", 2],
            ["Sun, September 4th 2016", 3],
            ["2016-09-05", 4]
        ]}}),
        4,
    )
    .await;
    let (s, body) = env
        .read(&[
            ("start", "2016-09-04T00:00:00Z"),
            ("end", "2016-09-05 00:00:00.000000000"),
            ("fields", "precise"),
        ])
        .await;
    assert_ok(s, &body);
    assert_eq!(
        body["data"]["precise"],
        json!([
            [3, "2016-09-04T00:00:00Z"],
            [1, "2016-09-04T01:02:03.123456789Z"],
            [2, "2016-09-04T01:02:04.5Z"],
            [4, "2016-09-05T00:00:00Z"]
        ])
    );

    // Tag filters: the written tag matches, another value matches nothing.
    let (s, body) = env
        .read(&[
            ("start", "2016-09-01"),
            ("end", "2016-09-03"),
            ("tags", r#"{"some_tag": "tag_value"}"#),
        ])
        .await;
    assert_ok(s, &body);
    assert_eq!(
        body["data"]["tags"],
        json!({"some_tag": "tag_value", "product_imei": IMEI})
    );
    assert_eq!(series(&body["data"], "current").0, vec![1.0, 2.0, 3.0]);
    let (s, body) = env
        .read(&[
            ("start", "2016-09-01"),
            ("end", "2016-09-03"),
            ("tags", r#"{"some_tag": "other"}"#),
        ])
        .await;
    assert_ok(s, &body);
    assert!(field_names(&body["data"]).is_empty(), "{body}");

    // The spec's "general data" example: another measurement, the IMEI as a tag.
    env.write_points(
        IMEI,
        json!({
            "measurement": "analysis",
            "fields": {"curve-data": [
                ["2016-01-01T00:01:20", 1], ["2016-01-01T00:01:21", 2],
                ["2016-01-01T00:01:22", 3], ["2016-01-01T00:01:23", 4]
            ]},
            "tags": {"analysis-type": "state-of-health", "product_imei": IMEI}
        }),
        4,
    )
    .await;
    let (s, body) = env
        .read(&[
            ("measurement", "analysis"),
            ("start", "2016-01-01"),
            ("end", "2016-01-02"),
        ])
        .await;
    assert_ok(s, &body);
    assert_eq!(body["data"]["measurement"], "analysis");
    assert_eq!(
        series(&body["data"], "curve-data").0,
        vec![1.0, 2.0, 3.0, 4.0]
    );

    // Defaults: the last 7 days up to now.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (s, body) = env
        .write(
            IMEI,
            json!({"fields": {"recent": [[now_ms - 3_600_000, 1], [now_ms - 8 * 86_400_000, 2]]}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = env.read(&[]).await;
    assert_ok(s, &body);
    let (recent, times) = series(&body["data"], "recent");
    assert_eq!(recent, vec![1.0]);
    // `*` is every field of the series, as InfluxDB's `SELECT *`: the 2016
    // fields are there, without values in this range.
    assert_eq!(body["data"]["current"], json!([[null, times[0]]]));
}

/// One hour of six values and one of two, downsampled with each function.
async fn downsampling_with_several_functions(backend: Backend) {
    let env = Env::start(backend).await;
    let t0: i64 = 1_451_606_400_000; // 2016-01-01T00:00:00Z
    let min = 60_000;
    let mut pairs: Vec<Json> = (0..6).map(|i| json!([t0 + i * 10 * min, i + 1])).collect();
    pairs.push(json!([t0 + 60 * min, 10]));
    pairs.push(json!([t0 + 90 * min, 20]));
    let (s, body) = env.write(IMEI, json!({"fields": {"power": pairs}})).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let range = [
        ("start", "2016-01-01T00:00:00Z"),
        ("end", "2016-01-01T01:59:59Z"),
        ("fields", "power"),
        ("ds_interval", "1h"),
    ];
    let hours = vec![
        "2016-01-01T00:00:00Z".to_string(),
        "2016-01-01T01:00:00Z".to_string(),
    ];
    let sd6 = 3.5f64.sqrt(); // sample standard deviation of 1..=6
    let sd2 = 50f64.sqrt(); // of 10 and 20
    let cases: [(Option<&str>, [f64; 2]); 10] = [
        (None, [3.5, 15.0]), // the default is mean
        (Some("mean"), [3.5, 15.0]),
        (Some("count"), [6.0, 2.0]),
        (Some("sum"), [21.0, 30.0]),
        (Some("min"), [1.0, 10.0]),
        (Some("max"), [6.0, 20.0]),
        (Some("first"), [1.0, 10.0]),
        (Some("last"), [6.0, 20.0]),
        (Some("median"), [3.5, 15.0]),
        (Some("spread"), [5.0, 10.0]),
    ];
    for (function, expected) in cases {
        let mut args = range.to_vec();
        if let Some(f) = function {
            args.push(("ds_function", f));
        }
        let (s, body) = env.read(&args).await;
        assert_ok(s, &body);
        let (values, times) = series(&body["data"], "power");
        assert!(close(&values, &expected), "{function:?}: {values:?}");
        assert_eq!(times, hours, "{function:?}");
    }
    let mut args = range.to_vec();
    args.push(("ds_function", "stddev"));
    let (s, body) = env.read(&args).await;
    assert_ok(s, &body);
    assert!(close(&series(&body["data"], "power").0, &[sd6, sd2]));

    // 30-minute buckets, counted.
    let (s, body) = env
        .read(&[
            ("start", "2016-01-01T00:00:00Z"),
            ("end", "2016-01-01T01:59:59Z"),
            ("ds_interval", "30m"),
            ("ds_function", "count"),
        ])
        .await;
    assert_ok(s, &body);
    let (values, times) = series(&body["data"], "power");
    assert!(close(&values, &[3.0, 3.0, 1.0, 1.0]), "{values:?}");
    assert_eq!(times[3], "2016-01-01T01:30:00Z");

    // Arguments in a JSON body, with the spec examples' spelling `ds_fucntion`.
    let (s, body) = env
        .server
        .call(
            Method::GET,
            &format!("/v1/products/{IMEI}/data"),
            Some(json!({"start": "2016-01-01", "end": "2016-01-01T01:59:59Z",
                "fields": ["power"], "ds_interval": "1h", "ds_fucntion": "sum"})),
        )
        .await;
    assert_ok(s, &body);
    assert!(close(&series(&body["data"], "power").0, &[21.0, 30.0]));
}

/// The spec's reading example (every 4 hours, temperature every 8).
async fn fields_where_tags_and_limit(backend: Backend) {
    let env = Env::start(backend).await;
    let t0: i64 = 1_451_606_400_000;
    let h4 = 4 * 3_600_000;
    let current = [
        1.234, 2.234, 3.234, 1.234, 2.345, 2.678, 2.910, 2.345, 2.678, 2.910, 2.345, 2.678, 2.910,
    ];
    let voltage = [
        14.243, 14.723, 14.826, 13.284, 12.345, 12.678, 12.910, 12.345, 12.678, 12.910, 12.345,
        12.678, 12.910,
    ];
    let temperature = [21.345, 21.345, 21.345, 21.910, 21.678, 21.345, 21.910];
    let at = |i: usize| t0 + i as i64 * h4;
    let body = json!({"fields": {
        "current": current.iter().enumerate().map(|(i, v)| json!([at(i), v])).collect::<Vec<_>>(),
        "voltage": voltage.iter().enumerate().map(|(i, v)| json!([at(i), v])).collect::<Vec<_>>(),
        "temperature": temperature.iter().enumerate().map(|(i, v)| json!([at(2 * i), v])).collect::<Vec<_>>(),
    }});
    env.write_points(IMEI, body, 33).await;
    let span = [("start", "2016-01-01"), ("end", "2016-01-03")];

    // `*` (and no `fields`) is every field; nulls where temperature is missing.
    for args in [span.to_vec(), [&span[..], &[("fields", "*")]].concat()] {
        let (s, body) = env.read(&args).await;
        assert_ok(s, &body);
        let mut names = field_names(&body["data"]);
        names.sort();
        assert_eq!(names, ["current", "temperature", "voltage"]);
        assert_eq!(
            body["data"]["temperature"][1],
            json!([null, "2016-01-01T04:00:00Z"])
        );
        assert_eq!(body["data"]["current"].as_array().unwrap().len(), 13);
    }
    // A list: comma-separated, repeated, or a JSON list in the query string.
    for fields in [
        vec![("fields", "current,temperature")],
        vec![("fields", "current"), ("fields", "temperature")],
        vec![("fields", r#"["current", "temperature"]"#)],
    ] {
        let (s, body) = env.read(&[&span[..], &fields[..]].concat()).await;
        assert_ok(s, &body);
        assert_eq!(field_names(&body["data"]), ["current", "temperature"]);
    }

    // The spec's where example, in both spellings: rows where voltage > 14.0.
    for clause in ["voltage > 14.0", "'voltage' > 14.0"] {
        let (s, body) = env
            .read(&[
                ("start", "2016-01-01"),
                ("end", "2016-01-02"),
                ("limit", "100"),
                ("where", clause),
                ("fields", "current,temperature"),
            ])
            .await;
        assert_ok(s, &body);
        assert_eq!(
            body["data"]["current"],
            json!([
                [1.234, "2016-01-01T00:00:00Z"],
                [2.234, "2016-01-01T04:00:00Z"],
                [3.234, "2016-01-01T08:00:00Z"]
            ]),
            "{clause}"
        );
        assert_eq!(
            body["data"]["temperature"],
            json!([
                [21.345, "2016-01-01T00:00:00Z"],
                [null, "2016-01-01T04:00:00Z"],
                [21.345, "2016-01-01T08:00:00Z"]
            ])
        );
    }
    // AND, OR, parentheses.
    let (s, body) = env
        .read(
            &[
                &span[..],
                &[(
                    "where",
                    "voltage > 14.5 OR (temperature >= 21.9 AND current < 3)",
                )],
            ]
            .concat(),
        )
        .await;
    assert_ok(s, &body);
    assert_eq!(
        series(&body["data"], "voltage").1,
        [
            "2016-01-01T04:00:00Z",
            "2016-01-01T08:00:00Z",
            "2016-01-02T00:00:00Z",
            "2016-01-03T00:00:00Z"
        ]
    );
    // limit.
    let (s, body) = env.read(&[&span[..], &[("limit", "2")]].concat()).await;
    assert_ok(s, &body);
    assert_eq!(series(&body["data"], "current").0, vec![1.234, 2.234]);

    // Tags: points of another series of the same unit are told apart.
    let (s, b) = env
        .write(
            IMEI,
            json!({"tags": {"source": "backfill"}, "fields": {"current": [[t0, 99.0]]}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, body) = env
        .read(
            &[
                &span[..],
                &[("tags", r#"{"source": "backfill"}"#), ("fields", "current")],
            ]
            .concat(),
        )
        .await;
    assert_ok(s, &body);
    assert_eq!(
        body["data"]["current"],
        json!([[99.0, "2016-01-01T00:00:00Z"]])
    );
}

async fn bad_input_gets_400_with_a_message(backend: Backend) {
    let env = Env::start(backend).await;
    let reads: &[(&[(&str, &str)], &str)] = &[
        (&[("ds_interval", "5x")], "invalid ds_interval"),
        (&[("ds_interval", "0m")], "invalid ds_interval"),
        (&[("ds_interval", "1.5h")], "invalid ds_interval"),
        (
            &[("ds_interval", "1h"), ("ds_function", "derivative")],
            "unknown ds_function",
        ),
        (&[("ds_function", "mean()")], "unknown ds_function"),
        (&[("ds_function", "max")], "needs ds_interval"),
        (
            &[("where", "value > 1; DROP MEASUREMENT telemetry")],
            "where clause",
        ),
        (&[("where", "voltage > 1 OR 1=1")], "where clause"),
        (
            &[("where", "voltage > 1) ; SELECT * FROM telemetry --")],
            "where clause",
        ),
        (&[("where", "voltage >")], "where clause"),
        (&[("where", "(voltage > 1")], "where clause"),
        (&[("where", "voltage ~ /x/")], "where clause"),
        (
            &[("start", "2016-01-02"), ("end", "2016-01-01")],
            "is before start",
        ),
        (&[("start", "last tuesday")], "unrecognised timestamp"),
        (&[("end", "2016-02-30")], "unrecognised timestamp"),
        (&[("start", "Mon, October 4th 2016")], "is a Tuesday"),
        (
            &[("tags", "{tagKey: tagValue}")],
            "tags must be a JSON object",
        ),
        (&[("tags", "[1, 2]")], "tags must be a JSON object"),
        (&[("tags", r#"{"product_imei": "999"}"#)], "product_imei"),
        (&[("limit", "ten")], "limit"),
        (&[("limit", "-1")], "limit"),
        (&[("fields", "")], "invalid field name"),
        (&[("fields", "current,*")], "cannot be combined"),
        (&[("fields", "[1]")], "fields must name fields as strings"),
        (&[("colour", "red")], "unknown argument 'colour'"),
        (&[("limit", "1"), ("limit", "2")], "more than once"),
        (&[("start", "2000-01-01"), ("ds_interval", "1u")], "buckets"),
    ];
    for (args, needle) in reads {
        let (s, body) = env.read(args).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{args:?}: {body}");
        assert_eq!(body["status"], "error");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{args:?}: {message}");
    }
    // Same argument in the query string and the body.
    env.server
        .call_expecting(
            StatusCode::BAD_REQUEST,
            Method::GET,
            &format!("/v1/products/{IMEI}/data?limit=1"),
            Some(json!({"limit": 2})),
        )
        .await;

    let writes: &[(Json, &str)] = &[
        (json!([1, 2]), "must be a JSON object"),
        (
            json!({"fields": {"v": [["soon", 1.0]]}}),
            "fields.v[0]: unrecognised timestamp",
        ),
        (json!({"fields": {"v": [[1, null]]}}), "may not be null"),
        (
            json!({"fields": {"v": [[1, [1]]]}}),
            "number, string or boolean",
        ),
        (json!({"fields": {"v": [[1]]}}), "expected [time, value]"),
        (
            json!({"fields": {"v": {"a": 1}}}),
            "list of [time, value] pairs",
        ),
        (
            json!({"fields": {"time": [[1, 1]]}}),
            "cannot be a field name",
        ),
        (json!({"fields": {"v": [[1, "a\nb"]]}}), "line breaks"),
        (
            json!({"tags": {"tag1": "x"}, "fields": {"v": [[1, 1]]}}),
            "tag name \"tag1\"",
        ),
        (
            json!({"tags": {"site": "a b"}, "fields": {"v": [[1, 1]]}}),
            "tags.site",
        ),
        (
            json!({"tags": {"site": "x' OR '1'='1"}, "fields": {"v": [[1, 1]]}}),
            "tags.site",
        ),
        (
            json!({"tags": {"product_imei": "123"}, "fields": {"v": [[1, 1]]}}),
            "set from the URL",
        ),
        (
            json!({"measurement": 5, "fields": {"v": [[1, 1]]}}),
            "measurement must be a string",
        ),
        (
            json!({"measurement": "tele\nmetry", "fields": {"v": [[1, 1]]}}),
            "invalid measurement name",
        ),
        (json!({"tags": {}}), "fields is required"),
        (
            json!({"fields": {"v": [[1, 1]]}, "database": "x"}),
            "unknown key 'database'",
        ),
        (json!({"fields": {"v": [[1e300, 1]]}}), "out of range"),
    ];
    for (body, needle) in writes {
        let (s, answer) = env.write(IMEI, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    // A batch with one bad pair writes nothing.
    let (s, _) = env
        .write(
            IMEI,
            json!({"fields": {"good": [[1000, 1]], "bad": [[1000, null]]}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, body) = env
        .read(&[("start", "0"), ("end", "2000"), ("fields", "*")])
        .await;
    assert_ok(s, &body);
    assert!(field_names(&body["data"]).is_empty(), "{body}");
    // Malformed JSON.
    let r = env
        .server
        .client
        .post(env.server.url(&format!("/v1/products/{IMEI}/data")))
        .header("Authorization", format!("Token token={}", env.server.token))
        .header("Content-Type", "application/json")
        .body("{\"fields\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Undocumented methods are 405 in the error envelope.
    let (s, body) = env
        .server
        .delete(&format!("/v1/products/{IMEI}/data"))
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["status"], "error");
}

async fn permissions_and_entity_scope(backend: Backend) {
    let env = Env::start(backend).await;
    let server = &env.server;
    let ours = server.seed("entity", json!({})).await.as_i64().unwrap();
    let theirs = server.seed("entity", json!({})).await.as_i64().unwrap();
    let own_imei = "013777946874002";
    let other_imei = "013777946874003";
    server
        .seed("product", json!({"product_imei": own_imei}))
        .await;
    server
        .seed("product", json!({"product_imei": other_imei}))
        .await;
    link(server, own_imei, ours).await;
    link(server, other_imei, theirs).await;
    let point = json!({"fields": {"v": [[1000, 1]]}});

    // OVERVIEW reads, but may not write.
    let viewer = server.user("viewer", "OVERVIEW", "GLOBAL", None).await;
    let (s, body) = env.read_as(&viewer, IMEI, &[]).await;
    assert_ok(s, &body);
    let (s, body) = server
        .post_as(&viewer, &format!("/v1/products/{IMEI}/data"), point.clone())
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");

    // An ENTITY technician reaches its own entity's unit only; the other is a 404.
    let tech = server.user("tech", "TECHNICAL", "ENTITY", Some(ours)).await;
    let (s, body) = server
        .post_as(
            &tech,
            &format!("/v1/products/{own_imei}/data"),
            point.clone(),
        )
        .await;
    assert_ok(s, &body);
    let (s, body) = env
        .read_as(&tech, own_imei, &[("start", "0"), ("end", "2000")])
        .await;
    assert_ok(s, &body);
    assert_eq!(body["data"]["v"], json!([[1, "1970-01-01T00:00:01Z"]]));
    for imei in [other_imei, IMEI] {
        let (s, body) = env.read_as(&tech, imei, &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
        let (s, body) = server
            .post_as(&tech, &format!("/v1/products/{imei}/data"), point.clone())
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    }
    // Scope is checked before the arguments, so a bad query reveals nothing either.
    let (s, _) = env
        .read_as(&tech, other_imei, &[("ds_interval", "bad")])
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Unknown unit, no token.
    let (s, _) = env.read(&[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = env
        .read_as(&server.token.clone(), "999999999999999", &[])
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, _) = env.read_as("not-a-token", IMEI, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // upload_tool_log is SYSTEM.
    let (s, _) = server
        .post_as(
            &tech,
            "/v1/upload_tool_log",
            json!({"time": 1, "message": "m", "toolname": "tiger_test_jig_production"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Dead-letter actions: TECHNICAL and GLOBAL; decode is OVERVIEW.
    for path in [
        "/v1/rtc_import_mo_dead_letters",
        "/v1/rtc_import_mt_reply_dead_letters",
    ] {
        for token in [&viewer, &tech] {
            let (s, body) = server.call_as(token, Method::POST, path, None).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {body}");
        }
    }
    for action in ["replay", "discard"] {
        for token in [&viewer, &tech] {
            let (s, _) = server
                .call_as(
                    token,
                    Method::PUT,
                    &format!("/v1/rtc_dead_letters/1/{action}"),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{action}");
        }
    }
    let (s, _) = server
        .get_as(&viewer, "/v1/rtc_dead_letters/1/decode")
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "permitted, but there is no letter 1"
    );
}

async fn upload_tool_log(backend: Backend) {
    let env = Env::start(backend).await;
    let imei = "866557056339858";
    env.server
        .seed("product", json!({"product_imei": imei}))
        .await;
    let example = json!({
        "time": "2020-11-05T10:25:30Z",
        "message": "{\"serials\": {\"pcb\": \"BX0020-417157-M\", \"battery\": \"BT01090101-012042-0G9-3\", \"product\": \"BX0020-417157-M\"}, \"input_pv\": {\"value\": \"5.150\", \"pass\": true}, \"output_usb\": {\"value\": \"1.183\", \"pass\": true}, \"output_12v\": {\"value\": \"3.285\", \"pass\": true}}",
        "toolname": "bpower20_registration_production",
        "hostname": "CN-REG03",
        "machine_id": "593bfa0c",
        "passed": true,
        "product_imei": imei,
        "serial_number": "",
        "software_version": "0.3.0",
        "user": "mfg.sunworth@bboxx.co.uk",
    });
    let body = env
        .server
        .post_created("/v1/upload_tool_log", example.clone())
        .await;
    assert_eq!(
        body,
        json!({"status": "success", "message": "Log uploaded successfully", "data": null})
    );
    let (s, body) = env
        .read_as(
            &env.server.token.clone(),
            imei,
            &[
                ("measurement", "tool_log"),
                ("start", "2020-11-05"),
                ("end", "2020-11-06"),
                (
                    "tags",
                    r#"{"toolname": "bpower20_registration_production"}"#,
                ),
            ],
        )
        .await;
    assert_ok(s, &body);
    let data = &body["data"];
    assert_eq!(data["passed"], json!([[true, "2020-11-05T10:25:30Z"]]));
    assert_eq!(
        data["hostname"],
        json!([["CN-REG03", "2020-11-05T10:25:30Z"]])
    );
    assert_eq!(data["message"][0][0], example["message"]);

    let bad: &[(Json, &str)] = &[
        (
            json!({"message": "m", "toolname": "tiger_test_jig_production"}),
            "time",
        ),
        (
            json!({"time": 1, "toolname": "tiger_test_jig_production"}),
            "message",
        ),
        (json!({"time": 1, "message": "m"}), "toolname"),
        (
            json!({"time": 1, "message": "m", "toolname": "hammer"}),
            "toolname",
        ),
        (
            json!({"time": 1, "message": "m", "toolname": "tiger_test_jig_production", "product_imei": "1"}),
            "product_imei",
        ),
        (
            json!({"time": 1, "message": "m", "toolname": "tiger_test_jig_repair", "count": "many"}),
            "count",
        ),
        (
            json!({"time": 1, "message": "m", "toolname": "koala_test_jig_production", "passed": "yes"}),
            "passed",
        ),
        (
            json!({"time": "whenever", "message": "m", "toolname": "koala_test_jig_production"}),
            "time",
        ),
    ];
    for (body, field) in bad {
        let (s, answer) = env.server.post("/v1/upload_tool_log", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["status"], "validation-error");
        assert!(answer["data"].get(*field).is_some(), "{body}: {answer}");
    }
}

/// The spec's example dead-letter payload: an event log `[4, [[1517927343, "Connected"]]]`
/// from an IP-identified unit.
const SPEC_PAYLOAD: &str = "{\"ident\": \"Aeris/10.112.89.62\", \"message\": \"ggSfghpaebuvaUNvbm5lY3RlZP8=\", \"correlation_id\": \"d478ea0eeadc47e8aead97502235ccac\", \"timestamp\": \"2018-02-06T14:29:14.349698\", \"ident_type\": \"IP\"}";

fn dead_letter(queue: QueueName, reason: &str, payload: &str) -> Vec<u8> {
    encode_dead_letter(&DeadLetter {
        queue_name: queue,
        reason: reason.into(),
        payload: payload.into(),
    })
}

/// A dead letter of a bus message from an IMEI-identified unit.
fn imei_letter(queue: QueueName, imei: &str, id: u8, message: &[u8]) -> Vec<u8> {
    let env = BusEnvelope {
        imei,
        correlation_id: CorrelationId([id; 16]),
        received_at_ms: 1_518_543_688_000,
        transport: Transport::Tcp,
        ident: None,
        message,
        mo_number: None,
    };
    encode_dead_letter(&DeadLetter::from_bus(queue, &env, "no such MT message"))
}

async fn next(consumer: &mut Box<dyn Consumer>) -> bus::Delivery {
    let d = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
        .await
        .expect("a replayed message on the topic")
        .unwrap();
    consumer.commit(&d).await.unwrap();
    d
}

async fn letter_row(server: &TestServer, id: i64) -> Json {
    server.get_ok(&format!("/v1/rtc_dead_letters/{id}")).await
}

async fn dead_letters_import_decode_replay_discard(backend: Backend) {
    let env = Env::start(backend).await;
    let server = &env.server;
    let bus = &env.bus;
    let topics = Topics::default();
    let unit = "356938035643809";
    server
        .seed(
            "product",
            json!({"product_imei": unit, "rtc_network_name": "Aeris", "ip_address": "10.112.89.62"}),
        )
        .await;
    let mut mo = bus.subscribe(&[&topics.mo], "test-ingest").await.unwrap();
    let mut replies = bus
        .subscribe(&[&topics.mt_reply], "test-ingest")
        .await
        .unwrap();

    // The same letter twice (at-least-once), plus one the bus cannot read.
    let letter = dead_letter(QueueName::Mo, "unit not found for ident", SPEC_PAYLOAD);
    for _ in 0..2 {
        bus.publish(&topics.mo_dead_letter, b"Aeris/10.112.89.62", &letter)
            .await
            .unwrap();
    }
    let (s, body) = server
        .call(Method::POST, "/v1/rtc_import_mo_dead_letters", None)
        .await;
    assert_ok(s, &body);
    assert_eq!(body["message"], "MO dead letters imported");
    assert_eq!(body["data"]["imported"], 1, "{body}");
    assert_eq!(body["data"]["already_imported"], 1, "{body}");
    let id = body["data"]["rtc_dead_letter_ids"][0].as_i64().unwrap();

    // Importing again: nothing new; the same letter redelivered: still one row.
    let (s, body) = server
        .call(Method::POST, "/v1/rtc_import_mo_dead_letters", None)
        .await;
    assert_ok(s, &body);
    assert_eq!(body["data"]["imported"], 0, "{body}");
    bus.publish(&topics.mo_dead_letter, b"Aeris/10.112.89.62", &letter)
        .await
        .unwrap();
    let (_, body) = server
        .call(Method::POST, "/v1/rtc_import_mo_dead_letters", None)
        .await;
    assert_eq!(body["data"]["imported"], 0, "{body}");
    assert_eq!(body["data"]["already_imported"], 1, "{body}");
    assert_eq!(
        bus.lag(
            &topics.mo_dead_letter,
            control_plane::data::dead_letters::GROUP
        ),
        Some(0),
        "offsets committed"
    );

    // The generic listing with q.
    let (s, list) = server
        .list(
            "/v1/rtc_dead_letters",
            json!({"filters": [{"name": "queue_name", "op": "eq", "val": "RTC-MO"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["num_results"], 1, "{list}");
    let row = &list["objects"][0];
    assert_eq!(row["payload"], SPEC_PAYLOAD);
    assert_eq!(row["created_by"], ADMIN);
    assert!(row["status"].is_null());

    // Decode: the spec's example in readable form, and why it was dead-lettered.
    let (s, body) = server
        .get(&format!("/v1/rtc_dead_letters/{id}/decode"))
        .await;
    assert_ok(s, &body);
    assert_eq!(body["message"], "Dead letter message decoded");
    assert_eq!(
        body["data"],
        "Decoded message: [4, [[1517927343, \"Connected\"]]]"
    );
    assert_eq!(body["reason"], "unit not found for ident");

    // Replay: back on RTC-MO, keyed by the unit, the same message.
    let (s, body) = server
        .call(
            Method::PUT,
            &format!("/v1/rtc_dead_letters/{id}/replay"),
            None,
        )
        .await;
    assert_ok(s, &body);
    assert_eq!(
        body,
        json!({"status": "success", "message": "Dead letter message replayed", "data": null})
    );
    let d = next(&mut mo).await;
    assert_eq!(&d.key[..], unit.as_bytes());
    let replayed = decode_bus_envelope(&d.payload).unwrap();
    assert_eq!(replayed.imei, unit);
    assert_eq!(replayed.ident, Some("Aeris/10.112.89.62"));
    assert_eq!(
        replayed.correlation_id.to_string(),
        "d478ea0eeadc47e8aead97502235ccac"
    );
    assert_eq!(
        replayed.message,
        [
            0x82, 0x04, 0x9f, 0x82, 0x1a, 0x5a, 0x79, 0xbb, 0xaf, 0x69, b'C', b'o', b'n', b'n',
            b'e', b'c', b't', b'e', b'd', 0xff
        ]
    );
    assert_eq!(
        replayed.received_at_ms, 1_517_927_354_349,
        "2018-02-06T14:29:14.349"
    );
    let row = letter_row(server, id).await;
    assert_eq!(row["status"], "replayed");
    assert_eq!(row["replay_status"], "success");
    assert!(row["replay_status_text"]
        .as_str()
        .unwrap()
        .contains("RTC-MO"));
    assert!(row["status_time"].is_string() && row["replay_status_time"].is_string());
    assert_eq!(row["modified_by"], ADMIN);
    server
        .call_expecting(
            StatusCode::CONFLICT,
            Method::PUT,
            &format!("/v1/rtc_dead_letters/{id}/replay"),
            None,
        )
        .await;

    // It failed again and came back: the import reopens the row.
    bus.publish(&topics.mo_dead_letter, b"Aeris/10.112.89.62", &letter)
        .await
        .unwrap();
    let (_, body) = server
        .call(Method::POST, "/v1/rtc_import_mo_dead_letters", None)
        .await;
    assert_eq!(body["data"]["reopened"], 1, "{body}");
    assert_eq!(body["data"]["rtc_dead_letter_ids"], json!([id]));
    assert!(letter_row(server, id).await["status"].is_null());

    // Discard; a discarded letter is not replayed.
    let (s, body) = server
        .call(
            Method::PUT,
            &format!("/v1/rtc_dead_letters/{id}/discard"),
            None,
        )
        .await;
    assert_ok(s, &body);
    assert_eq!(
        body,
        json!({"status": "success", "message": "Dead letter message discarded", "data": null})
    );
    let row = letter_row(server, id).await;
    assert_eq!(row["status"], "discarded");
    assert!(row["status_time"].is_string());
    server
        .call_expecting(
            StatusCode::CONFLICT,
            Method::PUT,
            &format!("/v1/rtc_dead_letters/{id}/replay"),
            None,
        )
        .await;

    // MT replies: their own topic and message; replayed onto RTC-MT.Reply.
    let reply = imei_letter(QueueName::MtReply, unit, 7, &[0x82, 0x04, 0x80]);
    bus.publish(&topics.mt_reply_dead_letter, unit.as_bytes(), &reply)
        .await
        .unwrap();
    let (s, body) = server
        .call(Method::POST, "/v1/rtc_import_mt_reply_dead_letters", None)
        .await;
    assert_ok(s, &body);
    assert_eq!(body["message"], "MT Reply dead letters imported");
    assert_eq!(body["data"]["imported"], 1, "{body}");
    let reply_id = body["data"]["rtc_dead_letter_ids"][0].as_i64().unwrap();
    assert_eq!(
        letter_row(server, reply_id).await["queue_name"],
        "RTC-MT.Reply"
    );
    let (s, body) = server
        .call(
            Method::PUT,
            &format!("/v1/rtc_dead_letters/{reply_id}/replay"),
            None,
        )
        .await;
    assert_ok(s, &body);
    let d = next(&mut replies).await;
    let replayed = decode_bus_envelope(&d.payload).unwrap();
    assert_eq!((replayed.imei, replayed.ident), (unit, None));
    assert_eq!(replayed.message, [0x82, 0x04, 0x80]);

    // A unit nobody knows: the replay fails, says why, and is recorded.
    let stranger = SPEC_PAYLOAD.replace("10.112.89.62", "10.0.0.99");
    bus.publish(
        &topics.mo_dead_letter,
        b"x",
        &dead_letter(QueueName::Mo, "unit not found", &stranger),
    )
    .await
    .unwrap();
    // And a message that is not CBOR at all.
    let garbage = SPEC_PAYLOAD.replace("ggSfghpaebuvaUNvbm5lY3RlZP8=", "//8=");
    bus.publish(
        &topics.mo_dead_letter,
        b"y",
        &dead_letter(QueueName::Mo, "truncated CBOR", &garbage),
    )
    .await
    .unwrap();
    let (_, body) = server
        .call(Method::POST, "/v1/rtc_import_mo_dead_letters", None)
        .await;
    assert_eq!(body["data"]["imported"], 2, "{body}");
    let (_, list) = server
        .list(
            "/v1/rtc_dead_letters",
            json!({"filters": [{"name": "payload", "op": "like", "val": "%10.0.0.99%"}]}),
        )
        .await;
    let stranger_id = list["objects"][0]["rtc_dead_letter_id"].as_i64().unwrap();
    let body = server
        .call_expecting(
            StatusCode::CONFLICT,
            Method::PUT,
            &format!("/v1/rtc_dead_letters/{stranger_id}/replay"),
            None,
        )
        .await;
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("no product has the network identity Aeris/10.0.0.99"));
    let row = letter_row(server, stranger_id).await;
    assert_eq!(row["replay_status"], "failure");
    assert!(row["replay_status_text"]
        .as_str()
        .unwrap()
        .contains("Aeris/10.0.0.99"));
    assert!(row["status"].is_null(), "not replayed");

    let (_, list) = server
        .list(
            "/v1/rtc_dead_letters",
            json!({"filters": [{"name": "payload", "op": "like", "val": "%//8=%"}]}),
        )
        .await;
    let garbage_id = list["objects"][0]["rtc_dead_letter_id"].as_i64().unwrap();
    let (s, body) = server
        .get(&format!("/v1/rtc_dead_letters/{garbage_id}/decode"))
        .await;
    assert_ok(s, &body);
    assert_eq!(body["message"], "Dead letter message could not be decoded");
    assert!(body["data"].as_str().unwrap().contains("h'ffff'"), "{body}");

    // Unknown ids and methods.
    let (s, _) = server.get("/v1/rtc_dead_letters/999999/decode").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    server
        .call_expecting(
            StatusCode::NOT_FOUND,
            Method::PUT,
            "/v1/rtc_dead_letters/abc/discard",
            None,
        )
        .await;
    let (s, _) = server
        .get(&format!("/v1/rtc_dead_letters/{id}/replay"))
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);

    // The bus gone: a replay is a 503, and the failure is recorded.
    let (_, list) = server
        .list(
            "/v1/rtc_dead_letters",
            json!({"filters": [{"name": "rtc_dead_letter_id", "op": "eq", "val": garbage_id}]}),
        )
        .await;
    assert_eq!(list["num_results"], 1);
    let fresh = imei_letter(QueueName::Mo, unit, 9, &[0x82, 0x04, 0x80]);
    bus.publish(&topics.mo_dead_letter, unit.as_bytes(), &fresh)
        .await
        .unwrap();
    let (_, body) = server
        .call(Method::POST, "/v1/rtc_import_mo_dead_letters", None)
        .await;
    let fresh_id = body["data"]["rtc_dead_letter_ids"][0].as_i64().unwrap();
    bus.close();
    server
        .call_expecting(
            StatusCode::SERVICE_UNAVAILABLE,
            Method::PUT,
            &format!("/v1/rtc_dead_letters/{fresh_id}/replay"),
            None,
        )
        .await;
    assert_eq!(
        letter_row(server, fresh_id).await["replay_status"],
        "failure"
    );
    server
        .call_expecting(
            StatusCode::SERVICE_UNAVAILABLE,
            Method::POST,
            "/v1/rtc_import_mo_dead_letters",
            None,
        )
        .await;
}
