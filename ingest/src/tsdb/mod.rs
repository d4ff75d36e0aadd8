//! The time-series store: unit telemetry and analysis series.
//!
//! One trait, [`TimeSeries`], three backends:
//! - [`embedded`]: the default, in-process columnar store persisted to an
//!   append-only log under the data dir;
//! - [`influx`]: InfluxDB 1.x over HTTP (line protocol, InfluxQL);
//! - [`questdb`]: QuestDB (ILP writes through questdb-rs, SQL reads).
//!
//! The data model is InfluxDB's, as the spec describes it: a *measurement*
//! (`telemetry`, `analysis`, ...) holds points; a point has tags (always the
//! unit's IMEI, as `product_imei`), fields (float, integer, string, bool) and
//! a nanosecond timestamp.

use std::collections::BTreeMap;

use async_trait::async_trait;

pub mod embedded;
pub mod filter;
pub mod influx;
pub mod line;
pub mod questdb;

pub use filter::{parse_where, CmpOp, Expr, Literal, WhereError};

/// The tag every point carries: the unit's IMEI.
pub const IMEI_TAG: &str = "product_imei";
/// Measurement of unit telemetry (retention policy [`TELEMETRY_RP`]).
pub const TELEMETRY: &str = "telemetry";
/// Retention policy of [`TELEMETRY`].
pub const TELEMETRY_RP: &str = "telemetry_rp";
/// Measurement of derived series (retention policy [`ANALYSIS_RP`]).
pub const ANALYSIS: &str = "analysis";
/// Retention policy of [`ANALYSIS`].
pub const ANALYSIS_RP: &str = "analysis_rp";

/// The retention policy a measurement is written to (`None`: the database default).
pub fn retention_policy(measurement: &str) -> Option<&'static str> {
    match measurement {
        TELEMETRY => Some(TELEMETRY_RP),
        ANALYSIS => Some(ANALYSIS_RP),
        _ => None,
    }
}

/// A field value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// 64-bit float.
    Float(f64),
    /// 64-bit signed integer.
    Int(i64),
    /// UTF-8 string.
    Str(String),
    /// Boolean.
    Bool(bool),
}

impl FieldValue {
    /// The value as a number, for numeric aggregates and comparisons.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Float(f) => Some(*f),
            Self::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

/// One point to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// `telemetry`, `analysis`, ...
    pub measurement: String,
    /// The unit; stored as the [`IMEI_TAG`] tag.
    pub imei: String,
    /// Other tags (not `product_imei`), sorted by key.
    pub tags: BTreeMap<String, String>,
    /// Field values; names are unique within a point.
    pub fields: Vec<(String, FieldValue)>,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: i64,
}

/// Which fields a query returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fields {
    /// `*`: every field the series has.
    #[default]
    All,
    /// These fields, in this order.
    List(Vec<String>),
}

/// Downsampling functions (InfluxQL names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    /// Arithmetic mean (the default).
    #[default]
    Mean,
    /// Number of non-null values.
    Count,
    /// Sum.
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Value with the earliest timestamp.
    First,
    /// Value with the latest timestamp.
    Last,
    /// Median (mean of the two middle values for an even count).
    Median,
    /// Max minus min.
    Spread,
    /// Sample standard deviation.
    Stddev,
}

impl Aggregate {
    /// Every function, for listings and tests.
    pub const ALL: [Self; 10] = [
        Self::Mean,
        Self::Count,
        Self::Sum,
        Self::Min,
        Self::Max,
        Self::First,
        Self::Last,
        Self::Median,
        Self::Spread,
        Self::Stddev,
    ];

    /// The InfluxQL function name (also the API's `ds_function`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::First => "first",
            Self::Last => "last",
            Self::Median => "median",
            Self::Spread => "spread",
            Self::Stddev => "stddev",
        }
    }

    /// Parses a `ds_function` (case-insensitive, no brackets).
    pub fn parse(s: &str) -> Result<Self, TsdbError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                TsdbError::InvalidQuery(format!(
                    "unknown ds_function {s:?}; one of: {}",
                    Self::ALL.map(Self::as_str).join(", ")
                ))
            })
    }
}

/// Parses a `ds_interval` (`[number][u|ms|s|m|h|d|w]`) into nanoseconds.
pub fn parse_interval(s: &str) -> Result<i64, TsdbError> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let bad = || {
        TsdbError::InvalidQuery(format!(
            "invalid ds_interval {s:?}: expected [number][u|ms|s|m|h|d|w], e.g. \"5m\""
        ))
    };
    let n: i64 = s[..digits].parse().map_err(|_| bad())?;
    let unit: i64 = match &s[digits..] {
        "u" | "µ" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 604_800_000_000_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit) {
        Some(ns) if ns > 0 => Ok(ns),
        _ => Err(bad()),
    }
}

/// Downsampling: `GROUP BY time(interval)` with a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downsample {
    /// Bucket width in nanoseconds (> 0); buckets are aligned to the epoch.
    pub interval_ns: i64,
    /// Function applied within each bucket.
    pub function: Aggregate,
}

/// A read of one unit's series.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Measurement to read (`telemetry` by default in the API).
    pub measurement: String,
    /// The unit.
    pub imei: String,
    /// Inclusive start, nanoseconds since the epoch.
    pub start_ns: i64,
    /// Inclusive end, nanoseconds since the epoch.
    pub end_ns: i64,
    /// Fields to return.
    pub fields: Fields,
    /// Row filter (the parsed `where`).
    pub filter: Option<Expr>,
    /// Tags the points must have (besides the IMEI).
    pub tags: BTreeMap<String, String>,
    /// Optional downsampling.
    pub downsample: Option<Downsample>,
    /// At most this many rows.
    pub limit: Option<usize>,
}

impl Query {
    /// A raw query of every field of `imei` in `measurement` between the two times.
    pub fn new(measurement: &str, imei: &str, start_ns: i64, end_ns: i64) -> Self {
        Self {
            measurement: measurement.into(),
            imei: imei.into(),
            start_ns,
            end_ns,
            fields: Fields::All,
            filter: None,
            tags: BTreeMap::new(),
            downsample: None,
            limit: None,
        }
    }

    /// Checks the parts every backend relies on.
    pub fn validate(&self) -> Result<(), TsdbError> {
        if self.end_ns < self.start_ns {
            return Err(TsdbError::InvalidQuery("end is before start".into()));
        }
        if let Some(d) = self.downsample {
            if d.interval_ns <= 0 {
                return Err(TsdbError::InvalidQuery(
                    "ds_interval must be positive".into(),
                ));
            }
            // Bound the number of buckets a query can ask for.
            let buckets = (self.end_ns - self.start_ns) / d.interval_ns;
            if buckets > MAX_BUCKETS {
                return Err(TsdbError::InvalidQuery(format!(
                    "ds_interval too small for the time range ({buckets} buckets, at most {MAX_BUCKETS})"
                )));
            }
        }
        if let Fields::List(l) = &self.fields {
            if l.is_empty() {
                return Err(TsdbError::InvalidQuery("fields is empty".into()));
            }
        }
        Ok(())
    }
}

/// Query answer columns: times, then `(field, values)`.
pub type Rows = (Vec<i64>, Vec<(String, Vec<Option<FieldValue>>)>);

/// Most buckets one downsampled query may produce.
pub const MAX_BUCKETS: i64 = 1_000_000;

/// The answer to a [`Query`]: rows of a shared time column, one value column
/// per field (`None` where the field has no value at that time).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    /// The measurement read.
    pub measurement: String,
    /// `product_imei` and the query's tag filters.
    pub tags: BTreeMap<String, String>,
    /// Row timestamps, ascending (bucket starts when downsampled).
    pub times: Vec<i64>,
    /// `(field, values)`, each `values` as long as `times`.
    pub columns: Vec<(String, Vec<Option<FieldValue>>)>,
}

impl QueryResult {
    /// A field's `[value, timestamp]` rows.
    pub fn series(&self, field: &str) -> Option<Vec<(Option<&FieldValue>, i64)>> {
        let (_, col) = self.columns.iter().find(|(f, _)| f == field)?;
        Some(
            col.iter()
                .map(Option::as_ref)
                .zip(self.times.iter().copied())
                .collect(),
        )
    }
}

/// Time-series store failures.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// The query is not acceptable (400 in the API).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A point cannot be stored (bad name, type conflict, ...); nothing
    /// of the batch was written unless said otherwise.
    #[error("invalid point: {0}")]
    InvalidPoint(String),
    /// The backend cannot be reached or failed; retrying may help.
    #[error("time-series backend unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error.
    #[error("time-series backend error: {0}")]
    Backend(String),
    /// Local storage failed (embedded store).
    #[error("time-series storage: {0}")]
    Io(#[from] std::io::Error),
}

impl TsdbError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Io(_))
    }
}

/// A time-series store.
#[async_trait]
pub trait TimeSeries: Send + Sync + 'static {
    /// Writes points; resolves once they are durable in the backend.
    /// Writing the same (measurement, tags, field, time) again overwrites.
    async fn write(&self, points: &[Point]) -> Result<(), TsdbError>;

    /// Reads one unit's series.
    async fn query(&self, query: &Query) -> Result<QueryResult, TsdbError>;

    /// Whether the store answers, for readiness probes. The embedded store
    /// always does.
    async fn ping(&self) -> Result<(), TsdbError> {
        Ok(())
    }
}

/// Field and tag names are stored as given but must be non-empty, short and
/// free of control characters (the line protocol cannot carry newlines).
pub fn check_name(kind: &str, name: &str) -> Result<(), TsdbError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(TsdbError::InvalidPoint(format!(
            "invalid {kind} name {name:?}"
        )));
    }
    Ok(())
}

/// Checks a point before any backend stores it.
pub fn check_point(p: &Point) -> Result<(), TsdbError> {
    check_name("measurement", &p.measurement)?;
    check_name("imei", &p.imei)?;
    for (k, v) in &p.tags {
        check_name("tag", k)?;
        if k == IMEI_TAG {
            return Err(TsdbError::InvalidPoint(format!(
                "{IMEI_TAG} is set from the point's imei, not as a tag"
            )));
        }
        if v.is_empty() || v.chars().any(char::is_control) {
            return Err(TsdbError::InvalidPoint(format!(
                "invalid value for tag {k:?}"
            )));
        }
    }
    if p.fields.is_empty() {
        return Err(TsdbError::InvalidPoint(
            "a point needs at least one field".into(),
        ));
    }
    for (f, v) in &p.fields {
        check_name("field", f)?;
        match v {
            FieldValue::Float(x) if !x.is_finite() => {
                return Err(TsdbError::InvalidPoint(format!(
                    "field {f:?} is not finite"
                )))
            }
            FieldValue::Str(s) if s.contains(['\n', '\r']) => {
                return Err(TsdbError::InvalidPoint(format!(
                    "field {f:?}: strings cannot hold line breaks"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1m").unwrap(), 60_000_000_000);
        assert_eq!(parse_interval("10d").unwrap(), 864_000_000_000_000);
        assert_eq!(parse_interval("500000u").unwrap(), 500_000_000);
        assert_eq!(parse_interval("5ms").unwrap(), 5_000_000);
        assert_eq!(parse_interval("2w").unwrap(), 1_209_600_000_000_000);
        for bad in ["", "m", "0m", "1x", "-1m", "1.5h", "1 h", "99999999999999w"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn functions() {
        for a in Aggregate::ALL {
            assert_eq!(Aggregate::parse(a.as_str()).unwrap(), a);
        }
        assert_eq!(Aggregate::parse("MEAN").unwrap(), Aggregate::Mean);
        assert!(Aggregate::parse("mean()").is_err());
        assert!(Aggregate::parse("derivative").is_err());
    }
}
