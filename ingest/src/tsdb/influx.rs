//! InfluxDB 1.x over its HTTP API.
//!
//! Writes: line protocol to `/write?db=&rp=&precision=ns`, one request per
//! retention policy (`telemetry` → `telemetry_rp`, `analysis` →
//! `analysis_rp`, anything else → the database's default policy).
//! Reads: InfluxQL through `/query?epoch=ns`, rendered from the parsed query:
//! identifiers are always double-quoted and strings single-quoted with
//! escapes, so no user text reaches InfluxQL unparsed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::tsdb::Rows;
use serde::Deserialize;

use super::line::{self, quote_ident, quote_str};
use super::{
    retention_policy, FieldValue, Fields, Point, Query, QueryResult, TimeSeries, TsdbError,
    ANALYSIS_RP, IMEI_TAG, TELEMETRY_RP,
};
use crate::tsdb::Expr;

/// Settings of the InfluxDB backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// Database name.
    pub database: String,
    /// Basic-auth user, if the server wants one.
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
    /// Create the database and the retention policies on connect.
    pub create: bool,
    /// Retention of `telemetry_rp` and `analysis_rp` when created (InfluxQL duration, `INF` = keep).
    pub retention: String,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8086".into(),
            database: "smartsolar".into(),
            username: None,
            password: None,
            timeout_ms: 30_000,
            create: true,
            retention: "INF".into(),
        }
    }
}

/// The InfluxDB 1.x backend.
#[derive(Clone)]
pub struct Influx {
    config: InfluxConfig,
    http: reqwest::Client,
}

impl Influx {
    /// Connects and, if `create` is set, creates the database and retention policies.
    pub async fn connect(config: InfluxConfig) -> Result<Self, TsdbError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| TsdbError::Unavailable(e.to_string()))?;
        let me = Self { config, http };
        if me.config.create {
            me.setup().await?;
        }
        Ok(me)
    }

    async fn setup(&self) -> Result<(), TsdbError> {
        let db = quote_ident(&self.config.database);
        self.exec(&format!("CREATE DATABASE {db}")).await?;
        let retention = render_duration(&self.config.retention)?;
        for rp in [TELEMETRY_RP, ANALYSIS_RP] {
            let q = format!(
                "CREATE RETENTION POLICY {} ON {db} DURATION {retention} REPLICATION 1",
                quote_ident(rp)
            );
            if let Err(e) = self.exec(&q).await {
                // Re-creating with the same settings is a no-op; with other
                // settings InfluxDB says "already exists": keep the operator's.
                if !e.to_string().contains("already exists") {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Runs a statement through `POST /query` (for administration).
    async fn exec(&self, q: &str) -> Result<(), TsdbError> {
        let body = self
            .request(self.http.post(format!("{}/query", self.base())))
            .form(&[("q", q)])
            .send()
            .await
            .map_err(unavailable)?;
        let status = body.status();
        let text = body.text().await.map_err(unavailable)?;
        if !status.is_success() {
            return Err(TsdbError::Backend(format!("{status}: {text}")));
        }
        parse_response(&text, "").map(|_| ())
    }

    fn base(&self) -> &str {
        self.config.url.trim_end_matches('/')
    }

    fn request(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.username {
            Some(u) => rb.basic_auth(u, self.config.password.as_deref()),
            None => rb,
        }
    }

    /// The InfluxQL a query is sent as (public for tests and logs).
    pub fn render(&self, q: &Query) -> Result<String, TsdbError> {
        render_query(&self.config.database, q)
    }
}

fn unavailable(e: reqwest::Error) -> TsdbError {
    TsdbError::Unavailable(e.to_string())
}

/// `INF` or an InfluxQL duration literal such as `52w`.
fn render_duration(s: &str) -> Result<String, TsdbError> {
    if s.eq_ignore_ascii_case("inf") {
        return Ok("INF".into());
    }
    super::parse_interval(s)
        .map(|ns| format!("{ns}ns"))
        .map_err(|_| TsdbError::InvalidQuery(format!("invalid retention {s:?}: INF or e.g. 52w")))
}

/// Renders a parsed `where` as InfluxQL.
pub fn render_expr(out: &mut String, e: &Expr) {
    e.render(out, quote_ident, quote_str);
}

/// Renders a query as InfluxQL.
pub fn render_query(database: &str, q: &Query) -> Result<String, TsdbError> {
    q.validate()?;
    let mut s = String::from("SELECT ");
    match (&q.fields, q.downsample) {
        (Fields::All, None) => s.push_str("*::field"),
        (Fields::All, Some(d)) => {
            let _ = write!(s, "{}(*)", d.function.as_str());
        }
        (Fields::List(fields), ds) => {
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                super::check_name("field", f)
                    .map_err(|e| TsdbError::InvalidQuery(e.to_string()))?;
                match ds {
                    None => s.push_str(&quote_ident(f)),
                    Some(d) => {
                        let _ = write!(
                            s,
                            "{}({}) AS {}",
                            d.function.as_str(),
                            quote_ident(f),
                            quote_ident(f)
                        );
                    }
                }
            }
        }
    }
    s.push_str(" FROM ");
    s.push_str(&quote_ident(database));
    s.push('.');
    if let Some(rp) = retention_policy(&q.measurement) {
        s.push_str(&quote_ident(rp));
    }
    s.push('.');
    s.push_str(&quote_ident(&q.measurement));
    let _ = write!(
        s,
        " WHERE {} = {} AND time >= {} AND time <= {}",
        quote_ident(IMEI_TAG),
        quote_str(&q.imei),
        q.start_ns,
        q.end_ns
    );
    for (k, v) in &q.tags {
        let _ = write!(s, " AND {} = {}", quote_ident(k), quote_str(v));
    }
    if let Some(f) = &q.filter {
        s.push_str(" AND ");
        render_expr(&mut s, f);
    }
    if let Some(d) = q.downsample {
        let _ = write!(s, " GROUP BY time({}ns) fill(null)", d.interval_ns);
    }
    if let Some(l) = q.limit {
        let _ = write!(s, " LIMIT {l}");
    }
    Ok(s)
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Series {
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

/// Parses a `/query?epoch=ns` answer into rows; `strip` is a column-name
/// prefix to remove (`mean_` for `mean(*)`).
fn parse_response(text: &str, strip: &str) -> Result<Rows, TsdbError> {
    let r: Response = serde_json::from_str(text)
        .map_err(|e| TsdbError::Backend(format!("unreadable answer ({e}): {text:.200}")))?;
    if let Some(e) = r.error {
        return Err(TsdbError::Backend(e));
    }
    let mut times = Vec::new();
    let mut columns: Vec<(String, Vec<Option<FieldValue>>)> = Vec::new();
    for st in r.results {
        if let Some(e) = st.error {
            return Err(TsdbError::Backend(e));
        }
        // Without GROUP BY tags there is at most one series.
        if let Some(series) = st.series.into_iter().next() {
            let time_col = series.columns.iter().position(|c| c == "time");
            for (i, c) in series.columns.iter().enumerate() {
                if Some(i) != time_col {
                    let name = c.strip_prefix(strip).unwrap_or(c).to_owned();
                    columns.push((name, Vec::with_capacity(series.values.len())));
                }
            }
            for row in series.values {
                let mut col = 0;
                for (i, v) in row.into_iter().enumerate() {
                    if Some(i) == time_col {
                        times.push(v.as_i64().unwrap_or_default());
                    } else if let Some((_, c)) = columns.get_mut(col) {
                        c.push(json_value(v));
                        col += 1;
                    }
                }
            }
        }
    }
    Ok((times, columns))
}

fn json_value(v: serde_json::Value) -> Option<FieldValue> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(FieldValue::Bool(b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Some(FieldValue::Str(s)),
        other => Some(FieldValue::Str(other.to_string())),
    }
}

impl Influx {
    /// Writes `points`, one request per retention policy.
    async fn write_points(&self, points: &[Point]) -> Result<(), TsdbError> {
        // One body per retention policy, in first-seen order.
        let mut bodies: BTreeMap<Option<&'static str>, Vec<&Point>> = BTreeMap::new();
        for p in points {
            bodies
                .entry(retention_policy(&p.measurement))
                .or_default()
                .push(p);
        }
        for (rp, pts) in bodies {
            let mut body = String::with_capacity(pts.len() * 128);
            for p in pts {
                line::encode_point(&mut body, p)?;
            }
            let started = Instant::now();
            let mut params = vec![("db", self.config.database.as_str()), ("precision", "ns")];
            if let Some(rp) = rp {
                params.push(("rp", rp));
            }
            let resp = self
                .request(self.http.post(format!("{}/write", self.base())))
                .query(&params)
                .body(body)
                .send()
                .await
                .map_err(unavailable)?;
            let status = resp.status();
            metrics::histogram!(crate::metrics::TSDB_WRITE_DURATION, "backend" => "influx")
                .record(started.elapsed().as_secs_f64());
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                return Err(if status.is_server_error() {
                    TsdbError::Unavailable(format!("{status}: {text}"))
                } else {
                    TsdbError::InvalidPoint(format!("{status}: {text}"))
                });
            }
        }
        metrics::counter!(crate::metrics::TSDB_POINTS_WRITTEN, "backend" => "influx")
            .increment(points.len() as u64);
        Ok(())
    }
}

#[async_trait]
impl TimeSeries for Influx {
    async fn write(&self, points: &[Point]) -> Result<(), TsdbError> {
        let result = self.write_points(points).await;
        if result.is_err() {
            metrics::counter!(crate::metrics::TSDB_WRITE_ERRORS, "backend" => "influx")
                .increment(1);
        }
        result
    }

    async fn ping(&self) -> Result<(), TsdbError> {
        let resp = self
            .request(self.http.get(format!("{}/ping", self.base())))
            .send()
            .await
            .map_err(unavailable)?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            s => Err(TsdbError::Unavailable(format!(
                "InfluxDB /ping answered {s}"
            ))),
        }
    }

    async fn query(&self, q: &Query) -> Result<QueryResult, TsdbError> {
        let influxql = self.render(q)?;
        let started = Instant::now();
        let resp = self
            .request(self.http.get(format!("{}/query", self.base())))
            .query(&[
                ("db", self.config.database.as_str()),
                ("epoch", "ns"),
                ("q", influxql.as_str()),
            ])
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unavailable)?;
        metrics::histogram!(crate::metrics::TSDB_QUERY_DURATION, "backend" => "influx")
            .record(started.elapsed().as_secs_f64());
        if status.is_server_error() {
            return Err(TsdbError::Unavailable(format!("{status}: {text:.200}")));
        }
        let strip = match (&q.fields, q.downsample) {
            (Fields::All, Some(d)) => format!("{}_", d.function.as_str()),
            _ => String::new(),
        };
        let (times, columns) = parse_response(&text, &strip)?;
        Ok(result_for(q, times, columns))
    }
}

/// Builds the result: requested fields in the requested order (missing ones
/// as all-null columns), the IMEI and tag filters as `tags`.
pub(crate) fn result_for(
    q: &Query,
    times: Vec<i64>,
    mut columns: Vec<(String, Vec<Option<FieldValue>>)>,
) -> QueryResult {
    if let Fields::List(list) = &q.fields {
        let mut ordered = Vec::with_capacity(list.len());
        for f in list {
            let col = match columns.iter().position(|(n, _)| n == f) {
                Some(i) => columns.swap_remove(i).1,
                None => vec![None; times.len()],
            };
            ordered.push((f.clone(), col));
        }
        columns = ordered;
    } else {
        columns.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut tags = q.tags.clone();
    tags.insert(IMEI_TAG.into(), q.imei.clone());
    QueryResult {
        measurement: q.measurement.clone(),
        tags,
        times,
        columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::{parse_where, Aggregate, Downsample};

    #[test]
    fn renders_raw_and_downsampled_queries() {
        let mut q = Query::new("telemetry", "013777946874001", 10, 20);
        assert_eq!(
            render_query("db", &q).unwrap(),
            "SELECT *::field FROM \"db\".\"telemetry_rp\".\"telemetry\" WHERE \"product_imei\" = \
             '013777946874001' AND time >= 10 AND time <= 20"
        );
        q.fields = Fields::List(vec!["current".into(), "temperature".into()]);
        q.filter = Some(parse_where("'voltage' > 14.0 or site = 'x'").unwrap());
        q.tags.insert("some_tag".into(), "v".into());
        q.limit = Some(100);
        assert_eq!(
            render_query("db", &q).unwrap(),
            "SELECT \"current\", \"temperature\" FROM \"db\".\"telemetry_rp\".\"telemetry\" WHERE \
             \"product_imei\" = '013777946874001' AND time >= 10 AND time <= 20 AND \"some_tag\" = 'v' \
             AND (\"voltage\" > 14 OR \"site\" = 'x') LIMIT 100"
        );
        q.downsample = Some(Downsample {
            interval_ns: 3_600_000_000_000,
            function: Aggregate::Spread,
        });
        q.fields = Fields::List(vec!["current".into()]);
        q.filter = None;
        q.limit = None;
        q.measurement = "custom".into();
        assert_eq!(
            render_query("db", &q).unwrap(),
            "SELECT spread(\"current\") AS \"current\" FROM \"db\"..\"custom\" WHERE \
             \"product_imei\" = '013777946874001' AND time >= 10 AND time <= 20 AND \"some_tag\" = 'v' \
             GROUP BY time(3600000000000ns) fill(null)"
        );
    }

    #[test]
    fn hostile_text_stays_inside_quotes() {
        let mut q = Query::new("telemetry", "1' OR '1'='1", 0, 1);
        q.filter = Some(parse_where(r#""x\" = 1; DROP DATABASE \"db" = 'a\'; DROP'"#).unwrap());
        q.tags.insert("t\"ag".into(), "v'; DROP".into());
        let s = render_query("d\"b", &q).unwrap();
        assert!(
            s.contains(r#"FROM "d\"b"."telemetry_rp"."telemetry""#),
            "{s}"
        );
        assert!(s.contains(r#""product_imei" = '1\' OR \'1\'=\'1'"#), "{s}");
        assert!(s.contains(r#""t\"ag" = 'v\'; DROP'"#), "{s}");
        assert!(
            s.contains(r#""x\" = 1; DROP DATABASE \"db" = 'a\'; DROP'"#),
            "{s}"
        );
    }

    #[test]
    fn parses_answers() {
        let text = r#"{"results":[{"statement_id":0,"series":[{"name":"telemetry",
            "columns":["time","mean_current","mean_voltage"],
            "values":[[1,1.5,null],[2,2,"x"]]}]}]}"#;
        let (t, c) = parse_response(text, "mean_").unwrap();
        assert_eq!(t, vec![1, 2]);
        assert_eq!(c[0].0, "current");
        assert_eq!(
            c[0].1,
            vec![Some(FieldValue::Float(1.5)), Some(FieldValue::Int(2))]
        );
        assert_eq!(c[1].1, vec![None, Some(FieldValue::Str("x".into()))]);
        assert!(parse_response(r#"{"results":[{"statement_id":0,"error":"boom"}]}"#, "").is_err());
        assert!(parse_response(r#"{"error":"bad"}"#, "").is_err());
        let (t, c) = parse_response(r#"{"results":[{"statement_id":0}]}"#, "").unwrap();
        assert!(t.is_empty() && c.is_empty());
    }
}
