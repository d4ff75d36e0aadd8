//! QuestDB: writes over ILP/HTTP through questdb-rs, reads through the SQL
//! HTTP endpoint (`/exec?query=`).
//!
//! Table per measurement; `product_imei` and the other tags are SYMBOL
//! columns, fields typed columns, the designated timestamp is `timestamp`.
//! Queries are rendered from the parsed [`Query`]: identifiers double-quoted
//! (`"` doubled), strings single-quoted (`'` doubled), numbers from their
//! parsed value, so no user text reaches SQL unparsed.
//!
//! Function mapping: mean → `avg`, median → `approx_percentile(x, 0.5)`
//! (QuestDB's median is approximate), spread → `max(x) - min(x)`, stddev →
//! `stddev_samp`, others by name. QuestDB stores microseconds: nanosecond
//! bounds are truncated to microseconds.
//!
//! No QuestDB server can be installed from the registries this project
//! uses (it ships as a Java distribution/Docker image), so this backend is
//! tested on its rendering only; see `docs/decisions.md`.

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;

use super::filter::Expr;
use super::influx::result_for;
use super::Rows;
use super::{
    check_point, Aggregate, FieldValue, Fields, Point, Query, QueryResult, TimeSeries, TsdbError,
    IMEI_TAG,
};

/// Settings of the QuestDB backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuestDbConfig {
    /// HTTP base URL (ILP and SQL share it), e.g. `http://127.0.0.1:9000`.
    pub url: String,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
}

impl Default for QuestDbConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9000".into(),
            timeout_ms: 30_000,
        }
    }
}

/// The QuestDB backend.
#[derive(Clone)]
pub struct QuestDb {
    config: QuestDbConfig,
    http: reqwest::Client,
}

impl QuestDb {
    /// A client; connects per request.
    pub fn new(config: QuestDbConfig) -> Result<Self, TsdbError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| TsdbError::Unavailable(e.to_string()))?;
        Ok(Self { config, http })
    }

    fn base(&self) -> &str {
        self.config.url.trim_end_matches('/')
    }

    async fn sql(&self, sql: &str) -> Result<serde_json::Value, TsdbError> {
        let resp = self
            .http
            .get(format!("{}/exec", self.base()))
            .query(&[("query", sql)])
            .send()
            .await
            .map_err(|e| TsdbError::Unavailable(e.to_string()))?;
        let status = resp.status();
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| TsdbError::Backend(format!("unreadable answer: {e}")))?;
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            // A table that does not exist yet is an empty answer.
            if e.contains("does not exist") {
                return Ok(serde_json::json!({"columns": [], "dataset": []}));
            }
            return Err(TsdbError::Backend(e.to_owned()));
        }
        if !status.is_success() {
            return Err(TsdbError::Backend(format!("{status}")));
        }
        Ok(v)
    }
}

/// A SQL identifier for QuestDB.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A SQL string literal for QuestDB.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A nanosecond time as a QuestDB timestamp literal (microsecond precision).
pub fn timestamp_literal(ns: i64) -> String {
    let us = ns.div_euclid(1_000);
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => format!("'{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
        None => "'1970-01-01T00:00:00.000000Z'".into(),
    }
}

/// Renders a parsed `where` as QuestDB SQL.
pub fn render_expr(out: &mut String, e: &Expr) {
    e.render(out, quote_ident, quote_str);
}

fn aggregate_sql(f: Aggregate, col: &str) -> String {
    let c = quote_ident(col);
    match f {
        Aggregate::Mean => format!("avg({c})"),
        Aggregate::Median => format!("approx_percentile({c}, 0.5)"),
        Aggregate::Spread => format!("max({c}) - min({c})"),
        Aggregate::Stddev => format!("stddev_samp({c})"),
        other => format!("{}({c})", other.as_str()),
    }
}

/// Renders a query as QuestDB SQL; `all_fields` is the field list used for
/// `*` when downsampling (SQL needs each aggregate spelled out).
pub fn render_query(q: &Query, all_fields: &[String]) -> Result<String, TsdbError> {
    q.validate()?;
    let fields: Vec<&str> = match &q.fields {
        Fields::List(l) => l.iter().map(String::as_str).collect(),
        Fields::All => all_fields.iter().map(String::as_str).collect(),
    };
    let mut s = String::from("SELECT timestamp");
    match (&q.fields, q.downsample) {
        (Fields::All, None) => s.push_str(", *"),
        (_, None) => {
            for f in &fields {
                let _ = write!(s, ", {}", quote_ident(f));
            }
        }
        (_, Some(d)) => {
            for f in &fields {
                let _ = write!(
                    s,
                    ", {} AS {}",
                    aggregate_sql(d.function, f),
                    quote_ident(f)
                );
            }
        }
    }
    let _ = write!(
        s,
        " FROM {} WHERE {} = {} AND timestamp >= {} AND timestamp <= {}",
        quote_ident(&q.measurement),
        quote_ident(IMEI_TAG),
        quote_str(&q.imei),
        timestamp_literal(q.start_ns),
        timestamp_literal(q.end_ns)
    );
    for (k, v) in &q.tags {
        let _ = write!(s, " AND {} = {}", quote_ident(k), quote_str(v));
    }
    if let Some(f) = &q.filter {
        s.push_str(" AND ");
        render_expr(&mut s, f);
    }
    match q.downsample {
        Some(d) => {
            let _ = write!(
                s,
                " SAMPLE BY {}U FILL(NULL) ALIGN TO CALENDAR",
                d.interval_ns / 1_000
            );
        }
        None => s.push_str(" ORDER BY timestamp"),
    }
    if let Some(l) = q.limit {
        let _ = write!(s, " LIMIT {l}");
    }
    Ok(s)
}

/// Fills an ILP buffer with points.
#[cfg(feature = "questdb")]
fn fill_buffer(buf: &mut questdb::ingress::Buffer, points: &[Point]) -> Result<(), TsdbError> {
    use questdb::ingress::TimestampNanos;
    let bad = |e: questdb::Error| TsdbError::InvalidPoint(e.to_string());
    for p in points {
        check_point(p)?;
        buf.table(p.measurement.as_str()).map_err(bad)?;
        buf.symbol(IMEI_TAG, p.imei.as_str()).map_err(bad)?;
        for (k, v) in &p.tags {
            buf.symbol(k.as_str(), v.as_str()).map_err(bad)?;
        }
        for (k, v) in &p.fields {
            match v {
                FieldValue::Float(f) => buf.column_f64(k.as_str(), *f),
                FieldValue::Int(i) => buf.column_i64(k.as_str(), *i),
                FieldValue::Str(s) => buf.column_str(k.as_str(), s.as_str()),
                FieldValue::Bool(b) => buf.column_bool(k.as_str(), *b),
            }
            .map_err(bad)?;
        }
        buf.at(TimestampNanos::new(p.time_ns)).map_err(bad)?;
    }
    Ok(())
}

#[async_trait]
impl TimeSeries for QuestDb {
    #[cfg(feature = "questdb")]
    async fn write(&self, points: &[Point]) -> Result<(), TsdbError> {
        let conf = format!(
            "http::addr={};request_timeout={};",
            self.base().trim_start_matches("http://"),
            self.config.timeout_ms
        );
        let points = points.to_vec();
        let n = points.len() as u64;
        let started = std::time::Instant::now();
        // questdb-rs's sender is blocking.
        let result = tokio::task::spawn_blocking(move || {
            let mut sender = questdb::ingress::Sender::from_conf(&conf)
                .map_err(|e| TsdbError::Unavailable(e.to_string()))?;
            let mut buf = sender.new_buffer();
            fill_buffer(&mut buf, &points)?;
            sender
                .flush(&mut buf)
                .map_err(|e| TsdbError::Unavailable(e.to_string()))
        })
        .await
        .map_err(|e| TsdbError::Backend(format!("write task: {e}")))
        .and_then(|r| r);
        metrics::histogram!(crate::metrics::TSDB_WRITE_DURATION, "backend" => "questdb")
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => {
                metrics::counter!(crate::metrics::TSDB_POINTS_WRITTEN, "backend" => "questdb")
                    .increment(n)
            }
            Err(_) => metrics::counter!(crate::metrics::TSDB_WRITE_ERRORS, "backend" => "questdb")
                .increment(1),
        }
        result
    }

    #[cfg(not(feature = "questdb"))]
    async fn write(&self, points: &[Point]) -> Result<(), TsdbError> {
        for p in points {
            check_point(p)?;
        }
        Err(TsdbError::Unavailable(
            "built without the `questdb` feature".into(),
        ))
    }

    async fn ping(&self) -> Result<(), TsdbError> {
        self.sql("SELECT 1").await.map(|_| ())
    }

    async fn query(&self, q: &Query) -> Result<QueryResult, TsdbError> {
        // `*` with downsampling needs the field list: every non-symbol,
        // non-timestamp column of the table.
        let mut all = Vec::new();
        if q.fields == Fields::All && q.downsample.is_some() {
            let cols = self
                .sql(&format!(
                    "SELECT \"column\", \"type\" FROM table_columns({})",
                    quote_str(&q.measurement)
                ))
                .await?;
            for row in cols["dataset"].as_array().into_iter().flatten() {
                let (name, ty) = (row[0].as_str().unwrap_or(""), row[1].as_str().unwrap_or(""));
                if !matches!(ty, "SYMBOL" | "TIMESTAMP") && !name.is_empty() {
                    all.push(name.to_owned());
                }
            }
            if all.is_empty() {
                return Ok(result_for(q, Vec::new(), Vec::new()));
            }
        }
        let sql = render_query(q, &all)?;
        let v = self.sql(&sql).await?;
        let (times, columns) = parse_dataset(&v);
        Ok(result_for(q, times, columns))
    }
}

/// Reads `/exec`'s `{columns: [{name, type}], dataset: [[...]]}`; the first
/// `timestamp` column is the time, SYMBOL columns (tags) are dropped.
fn parse_dataset(v: &serde_json::Value) -> Rows {
    let cols: Vec<(String, String)> = v["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let time_idx = cols.iter().position(|(n, _)| n == "timestamp");
    let keep: Vec<usize> = (0..cols.len())
        .filter(|i| Some(*i) != time_idx && cols[*i].1 != "SYMBOL" && cols[*i].0 != "timestamp")
        .collect();
    let mut times = Vec::new();
    let mut out: Vec<(String, Vec<Option<FieldValue>>)> = keep
        .iter()
        .map(|i| (cols[*i].0.clone(), Vec::new()))
        .collect();
    for row in v["dataset"].as_array().into_iter().flatten() {
        let t = time_idx
            .and_then(|i| row[i].as_str())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .and_then(|d| d.timestamp_nanos_opt())
            .unwrap_or_default();
        times.push(t);
        for (o, i) in out.iter_mut().zip(&keep) {
            o.1.push(match &row[*i] {
                serde_json::Value::Null => None,
                serde_json::Value::Bool(b) => Some(FieldValue::Bool(*b)),
                serde_json::Value::Number(n) => Some(match n.as_i64() {
                    Some(x) if cols[*i].1 != "DOUBLE" && cols[*i].1 != "FLOAT" => {
                        FieldValue::Int(x)
                    }
                    _ => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                }),
                serde_json::Value::String(s) => Some(FieldValue::Str(s.clone())),
                other => Some(FieldValue::Str(other.to_string())),
            });
        }
    }
    (times, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::{parse_where, Downsample};

    const DAY: i64 = 86_400_000_000_000;

    #[test]
    fn renders_raw_and_downsampled_sql() {
        let mut q = Query::new("telemetry", "013777946874001", 0, DAY);
        assert_eq!(
            render_query(&q, &[]).unwrap(),
            "SELECT timestamp, * FROM \"telemetry\" WHERE \"product_imei\" = '013777946874001' \
             AND timestamp >= '1970-01-01T00:00:00.000000Z' AND timestamp <= '1970-01-02T00:00:00.000000Z' \
             ORDER BY timestamp"
        );
        q.fields = Fields::List(vec!["current".into()]);
        q.filter = Some(parse_where("voltage > 14 OR site = 'o''k'").unwrap());
        q.limit = Some(5);
        assert_eq!(
            render_query(&q, &[]).unwrap(),
            "SELECT timestamp, \"current\" FROM \"telemetry\" WHERE \"product_imei\" = '013777946874001' \
             AND timestamp >= '1970-01-01T00:00:00.000000Z' AND timestamp <= '1970-01-02T00:00:00.000000Z' \
             AND (\"voltage\" > 14 OR \"site\" = 'o''k') ORDER BY timestamp LIMIT 5"
        );
        q.filter = None;
        q.limit = None;
        q.fields = Fields::All;
        for (f, sql) in [
            (Aggregate::Mean, "avg(\"a\") AS \"a\""),
            (Aggregate::Median, "approx_percentile(\"a\", 0.5) AS \"a\""),
            (Aggregate::Spread, "max(\"a\") - min(\"a\") AS \"a\""),
            (Aggregate::Stddev, "stddev_samp(\"a\") AS \"a\""),
            (Aggregate::First, "first(\"a\") AS \"a\""),
        ] {
            q.downsample = Some(Downsample {
                interval_ns: 3_600_000_000_000,
                function: f,
            });
            let s = render_query(&q, &["a".into()]).unwrap();
            assert!(
                s.starts_with(&format!("SELECT timestamp, {sql} FROM")),
                "{s}"
            );
            assert!(
                s.ends_with(" SAMPLE BY 3600000000U FILL(NULL) ALIGN TO CALENDAR"),
                "{s}"
            );
        }
    }

    #[test]
    fn hostile_text_stays_inside_quotes() {
        let mut q = Query::new("tele\"metry", "1' OR '1'='1", 0, 1);
        q.filter = Some(parse_where(r#""a"" = 1; --" = 'x'' OR 1=1'"#).unwrap());
        let s = render_query(&q, &[]).unwrap();
        assert!(s.contains(r#"FROM "tele""metry""#), "{s}");
        assert!(s.contains(r#""product_imei" = '1'' OR ''1''=''1'"#), "{s}");
        assert!(s.contains(r#""a"" = 1; --" = 'x'' OR 1=1'"#), "{s}");
    }

    #[test]
    fn parses_exec_answers() {
        let v = serde_json::json!({
            "columns": [{"name":"timestamp","type":"TIMESTAMP"},{"name":"product_imei","type":"SYMBOL"},
                        {"name":"current","type":"DOUBLE"},{"name":"n","type":"LONG"}],
            "dataset": [["2016-01-01T00:00:00.000000Z","1",1,null],["2016-01-01T04:00:00.000000Z","1",2.5,3]]
        });
        let (t, c) = parse_dataset(&v);
        assert_eq!(
            t,
            vec![1_451_606_400_000_000_000, 1_451_620_800_000_000_000]
        );
        assert_eq!(c[0].0, "current");
        assert_eq!(
            c[0].1,
            vec![Some(FieldValue::Float(1.0)), Some(FieldValue::Float(2.5))]
        );
        assert_eq!(c[1].1, vec![None, Some(FieldValue::Int(3))]);
    }

    #[cfg(feature = "questdb")]
    #[test]
    fn fills_an_ilp_buffer() {
        let mut buf = questdb::ingress::Buffer::new(questdb::ingress::ProtocolVersion::V1);
        let p = Point {
            measurement: "telemetry".into(),
            imei: "1".into(),
            tags: Default::default(),
            fields: vec![
                ("current".into(), FieldValue::Float(1.5)),
                ("n".into(), FieldValue::Int(2)),
            ],
            time_ns: 1_000,
        };
        fill_buffer(&mut buf, &[p]).unwrap();
        assert_eq!(
            buf.as_bytes(),
            b"telemetry,product_imei=1 current=1.5,n=2i 1000\n"
        );
    }
}
