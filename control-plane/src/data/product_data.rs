//! `POST /products/<imei>/data` (TECHNICAL) writes a unit's series;
//! `GET /products/<imei>/data` (OVERVIEW) reads them (spec: "Product Data").
//!
//! Both check the product exists and is in the user's scope first (404
//! otherwise, as the generic routes answer). Every argument is parsed into
//! the typed [`Query`] / [`Point`]s of `ingest::tsdb`; a problem is a 400
//! that names the argument.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use ingest::tsdb::{
    self, parse_interval, parse_where, Aggregate, Downsample, FieldValue, Fields, Point, Query,
    QueryResult, IMEI_TAG, TELEMETRY,
};
use serde_json::{Map, Value as Json};

use super::time::{self, format_ns, now_ns};
use super::{require_visible_product, tsdb_error};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::error::ApiError;
use crate::web::route_table;
use crate::web::{success, JsonBody, QueryPairs};

/// `start` when none is given: this long before now.
const DEFAULT_RANGE_NS: i64 = 7 * 86_400 * 1_000_000_000;

/// Names a field may not have: the response puts fields next to
/// `measurement` and `tags`, `time` is InfluxDB's, and the IMEI is a tag.
const RESERVED_FIELDS: [&str; 4] = ["measurement", "tags", "time", IMEI_TAG];

/// The read arguments (`ds_fucntion` is the spelling of the spec's own
/// examples, accepted as a synonym).
const READ_PARAMS: [&str; 10] = [
    "start",
    "end",
    "fields",
    "measurement",
    "limit",
    "where",
    "tags",
    "ds_interval",
    "ds_function",
    "ds_fucntion",
];

pub(super) fn router() -> Router<AppState> {
    route_table([("/products/{id}/data", get(read).post(write))])
}

async fn write(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    require_visible_product(&state, &user, &imei).await?;
    let JsonBody(body) = JsonBody::from_request(req, &state).await?;
    let (points, count) = parse_write(&imei, &body).map_err(ApiError::BadRequest)?;
    if !points.is_empty() {
        state.timeseries.write(&points).await.map_err(tsdb_error)?;
    }
    Ok(success(
        StatusCode::OK,
        format!("{count} data-point(s) successfully written to influx"),
        Json::Null,
    ))
}

async fn read(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    require_visible_product(&state, &user, &imei).await?;
    let JsonBody(body) = JsonBody::from_request(req, &state).await?;
    let params = collect_params(raw.as_deref(), body)?;
    let query = parse_read(&imei, &params, now_ns()).map_err(ApiError::BadRequest)?;
    let result = state.timeseries.query(&query).await.map_err(tsdb_error)?;
    Ok(success(
        StatusCode::OK,
        "data retrieved successfully",
        render(result),
    ))
}

// ---------------------------------------------------------------- writing

/// The write body: `{"measurement", "tags": {k: v}, "fields": {name:
/// [[time, value], ...]}}` → points (one per distinct time, carrying every
/// field with a value at that time) and the number of `[time, value]` pairs.
pub fn parse_write(imei: &str, body: &Json) -> Result<(Vec<Point>, usize), String> {
    let Json::Object(body) = body else {
        return Err(
            "the body must be a JSON object {\"measurement\", \"tags\", \"fields\"}".into(),
        );
    };
    if let Some(k) = body
        .keys()
        .find(|k| !["measurement", "tags", "fields"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown key '{k}': the body has measurement, tags and fields"
        ));
    }
    let measurement = match body.get("measurement") {
        None | Some(Json::Null) => TELEMETRY.to_owned(),
        Some(Json::String(m)) => {
            check_name("measurement", m)?;
            m.clone()
        }
        Some(other) => return Err(format!("measurement must be a string, got {other}")),
    };
    let tags = match body.get("tags") {
        None | Some(Json::Null) => BTreeMap::new(),
        Some(Json::Object(t)) => write_tags(imei, t)?,
        Some(other) => return Err(format!("tags must be a JSON object, got {other}")),
    };
    let fields = match body.get("fields") {
        Some(Json::Object(f)) => f,
        None | Some(Json::Null) => {
            return Err("fields is required: {\"<field>\": [[<time>, <value>], ...]}".into())
        }
        Some(other) => return Err(format!("fields must be a JSON object, got {other}")),
    };
    let mut by_time: BTreeMap<i64, Vec<(String, FieldValue)>> = BTreeMap::new();
    let mut count = 0;
    for (name, pairs) in fields {
        check_field_name(name)?;
        let Json::Array(pairs) = pairs else {
            return Err(format!(
                "fields.{name} must be a list of [time, value] pairs"
            ));
        };
        for (i, pair) in pairs.iter().enumerate() {
            let at = || format!("fields.{name}[{i}]");
            let (t, v) = match pair.as_array().map(Vec::as_slice) {
                Some([t, v]) => (t, v),
                _ => return Err(format!("{}: expected [time, value], got {pair}", at())),
            };
            let t = time::parse_json(t).map_err(|e| format!("{}: {e}", at()))?;
            let v = field_value(v).map_err(|e| format!("{}: {e}", at()))?;
            let row = by_time.entry(t).or_default();
            // The same field twice at one time: the later pair wins, as in InfluxDB.
            match row.iter_mut().find(|(f, _)| f == name) {
                Some(slot) => slot.1 = v,
                None => row.push((name.clone(), v)),
            }
            count += 1;
        }
    }
    let points = by_time
        .into_iter()
        .map(|(time_ns, fields)| Point {
            measurement: measurement.clone(),
            imei: imei.to_owned(),
            tags: tags.clone(),
            fields,
            time_ns,
        })
        .collect();
    Ok((points, count))
}

/// The spec's tag rule: "Tags may only contain Uppercase, Lowercase, '_' and
/// '-' characters". Applied to tag keys as written; values may also hold
/// digits, since the spec's own examples tag by `product_imei`,
/// `product_type_id` and `entity_id`. A `product_imei` tag must be the URL's.
fn write_tags(imei: &str, tags: &Map<String, Json>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in tags {
        let value = match v {
            Json::String(s) => s.clone(),
            Json::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            other => return Err(format!("tags.{k} must be a string, got {other}")),
        };
        if k == IMEI_TAG {
            if value != imei {
                return Err(format!(
                    "tags.{IMEI_TAG} is set from the URL ('{imei}'); '{value}' is not allowed"
                ));
            }
            continue;
        }
        let key_ok = !k.is_empty()
            && k.len() <= 256
            && k.bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-');
        if !key_ok {
            return Err(format!(
                "tag name {k:?} may only contain upper- and lowercase letters, '_' and '-'"
            ));
        }
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !value_ok {
            return Err(format!(
                "tags.{k}: value {value:?} may only contain letters, digits, '_' and '-'"
            ));
        }
        out.insert(k.clone(), value);
    }
    Ok(out)
}

fn check_name(kind: &str, name: &str) -> Result<(), String> {
    tsdb::check_name(kind, name).map_err(|e| match e {
        tsdb::TsdbError::InvalidPoint(m) => m,
        other => other.to_string(),
    })
}

fn check_field_name(name: &str) -> Result<(), String> {
    check_name("field", name)?;
    if RESERVED_FIELDS.contains(&name) {
        return Err(format!(
            "'{name}' cannot be a field name (reserved: {})",
            RESERVED_FIELDS.join(", ")
        ));
    }
    Ok(())
}

/// A JSON value as a field value: integers stay integers (InfluxDB's `i`),
/// other numbers are floats, strings (one line) and booleans as they are.
fn field_value(v: &Json) -> Result<FieldValue, String> {
    match v {
        Json::Number(n) => Ok(match n.as_i64() {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Json::String(s) if s.contains(['\n', '\r']) => {
            Err("string values cannot contain line breaks".into())
        }
        Json::String(s) => Ok(FieldValue::Str(s.clone())),
        Json::Bool(b) => Ok(FieldValue::Bool(*b)),
        Json::Null => Err("a value may not be null".into()),
        other => Err(format!(
            "a value must be a number, string or boolean, got {other}"
        )),
    }
}

// ---------------------------------------------------------------- reading

/// The read arguments from the query string and/or a JSON body, by name. A
/// query-string value is a JSON string; `fields` may repeat there
/// (`fields=a&fields=b`, what `requests` sends for a list). The same
/// argument in both places is a 400 rather than a silent choice.
pub fn collect_params(raw: Option<&str>, body: Json) -> Result<Map<String, Json>, ApiError> {
    let mut params = Map::new();
    for (k, v) in QueryPairs::parse(raw)? {
        match params.get_mut(&k) {
            None => {
                params.insert(k, Json::String(v));
            }
            Some(Json::Array(list)) if k == "fields" => list.push(Json::String(v)),
            Some(first) if k == "fields" => {
                let first = first.take();
                params.insert(k, Json::Array(vec![first, Json::String(v)]));
            }
            Some(_) => {
                return Err(ApiError::BadRequest(format!(
                    "'{k}' is given more than once"
                )))
            }
        }
    }
    match body {
        Json::Null => {}
        Json::Object(body) => {
            for (k, v) in body {
                if params.contains_key(&k) {
                    return Err(ApiError::BadRequest(format!(
                        "'{k}' is given both in the query string and in the body"
                    )));
                }
                params.insert(k, v);
            }
        }
        _ => {
            return Err(ApiError::BadRequest(
                "the body of a data query must be a JSON object of arguments".into(),
            ))
        }
    }
    if let Some(k) = params.keys().find(|k| !READ_PARAMS.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown argument '{k}'; the arguments are {}",
            READ_PARAMS[..9].join(", ")
        )));
    }
    Ok(params)
}

/// Read arguments → the store's query, with the spec's defaults.
pub fn parse_read(imei: &str, params: &Map<String, Json>, now: i64) -> Result<Query, String> {
    let text = |k: &str| -> Result<Option<&str>, String> {
        match params.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(format!("{k} must be a string, got {other}")),
        }
    };
    let time_arg = |k: &str, default: i64| -> Result<i64, String> {
        match params.get(k) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => time::parse_json(v).map_err(|e| format!("{k}: {e}")),
        }
    };
    let end = time_arg("end", now)?;
    let start = time_arg("start", now.saturating_sub(DEFAULT_RANGE_NS))?;
    // Telemetry starts at the epoch; with both ends at or after it, no
    // span or bucket count computed from them can overflow `i64`.
    for (k, t) in [("start", start), ("end", end)] {
        if t < 0 {
            return Err(format!(
                "{k} ({}) is before 1970-01-01T00:00:00Z, the earliest time the data API reads",
                format_ns(t)
            ));
        }
    }
    if end < start {
        return Err(format!(
            "end ({}) is before start ({})",
            format_ns(end),
            format_ns(start)
        ));
    }
    let measurement = match text("measurement")? {
        None => TELEMETRY.to_owned(),
        Some(m) => {
            check_name("measurement", m)?;
            m.to_owned()
        }
    };
    let mut query = Query::new(&measurement, imei, start, end);
    query.fields = read_fields(params.get("fields"))?;
    query.limit = match params.get("limit") {
        None | Some(Json::Null) => None,
        Some(v) => {
            let n = match v {
                Json::Number(n) => n.as_u64(),
                Json::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("limit must be a non-negative integer, got {v}"))?;
            // 0 means no limit, as a falsy limit does in `q`.
            (n > 0).then(|| usize::try_from(n).unwrap_or(usize::MAX))
        }
    };
    query.filter = match text("where")? {
        Some(w) if !w.trim().is_empty() => Some(parse_where(w).map_err(|e| e.to_string())?),
        _ => None,
    };
    query.tags = read_tags(imei, params.get("tags"))?;
    let function = match (text("ds_function")?, text("ds_fucntion")?) {
        (Some(_), Some(_)) => {
            return Err("give ds_function once (ds_fucntion is the same argument)".into())
        }
        (Some(f), None) | (None, Some(f)) => Some(Aggregate::parse(f).map_err(invalid)?),
        (None, None) => None,
    };
    query.downsample = match text("ds_interval")? {
        Some(i) => Some(Downsample {
            interval_ns: parse_interval(i).map_err(invalid)?,
            function: function.unwrap_or_default(),
        }),
        None if function.is_some() => {
            return Err("ds_function needs ds_interval (e.g. ds_interval=1h)".into())
        }
        None => None,
    };
    query.validate().map_err(invalid)?;
    Ok(query)
}

fn invalid(e: tsdb::TsdbError) -> String {
    match e {
        tsdb::TsdbError::InvalidQuery(m) | tsdb::TsdbError::InvalidPoint(m) => m,
        other => other.to_string(),
    }
}

/// `*` (or absent) for every field; otherwise a list: a JSON array, a JSON
/// array in a string, repeated query arguments, or comma-separated names.
fn read_fields(v: Option<&Json>) -> Result<Fields, String> {
    let names: Vec<String> = match v {
        None | Some(Json::Null) => return Ok(Fields::All),
        Some(Json::String(s)) if s.trim() == "*" => return Ok(Fields::All),
        Some(Json::String(s)) if s.trim_start().starts_with('[') => {
            let list: Json = serde_json::from_str(s)
                .map_err(|e| format!("fields is not a JSON list of names: {e}"))?;
            return read_fields(Some(&list));
        }
        Some(Json::String(s)) => s.split(',').map(|n| n.trim().to_owned()).collect(),
        Some(Json::Array(list)) => list
            .iter()
            .map(|n| match n {
                Json::String(s) => Ok(s.trim().to_owned()),
                other => Err(format!("fields must name fields as strings, got {other}")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("fields must be \"*\" or a list, got {other}")),
    };
    if names.len() == 1 && names[0] == "*" {
        return Ok(Fields::All);
    }
    if names.is_empty() {
        return Err("fields is empty: name at least one field, or \"*\"".into());
    }
    let mut unique: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        if n == "*" {
            return Err("fields: \"*\" cannot be combined with field names".into());
        }
        check_field_name(&n).map_err(|e| format!("fields: {e}"))?;
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    Ok(Fields::List(unique))
}

/// `tags`: a JSON object (or its text) of tag → value that points must have.
fn read_tags(imei: &str, v: Option<&Json>) -> Result<BTreeMap<String, String>, String> {
    let parsed;
    let object = match v {
        None | Some(Json::Null) => return Ok(BTreeMap::new()),
        Some(Json::String(s)) if s.trim().is_empty() => return Ok(BTreeMap::new()),
        Some(Json::String(s)) => {
            parsed = serde_json::from_str::<Json>(s).map_err(|e| {
                format!("tags must be a JSON object like {{\"tag\": \"value\"}}: {e}")
            })?;
            &parsed
        }
        Some(other) => other,
    };
    let Json::Object(map) = object else {
        return Err(format!(
            "tags must be a JSON object like {{\"tag\": \"value\"}}, got {object}"
        ));
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let value = match v {
            Json::String(s) => s.clone(),
            Json::Number(n) => n.to_string(),
            Json::Bool(b) => b.to_string(),
            other => return Err(format!("tags.{k} must be a string, got {other}")),
        };
        check_name("tag", k)?;
        if value.chars().any(char::is_control) {
            return Err(format!("tags.{k}: control characters are not allowed"));
        }
        if k == IMEI_TAG {
            if value != imei {
                return Err(format!(
                    "tags.{IMEI_TAG} is the URL's IMEI ('{imei}'); '{value}' is not allowed"
                ));
            }
            continue;
        }
        out.insert(k.clone(), value);
    }
    Ok(out)
}

/// The spec's shape: `{"measurement", "tags", "<field>": [[value, time], ...]}`,
/// `null` where a field has no value at a row's time.
pub fn render(result: QueryResult) -> Json {
    let times: Vec<Json> = result
        .times
        .iter()
        .map(|t| Json::String(format_ns(*t)))
        .collect();
    let mut data = Map::new();
    data.insert("measurement".into(), Json::String(result.measurement));
    data.insert(
        "tags".into(),
        Json::Object(
            result
                .tags
                .into_iter()
                .map(|(k, v)| (k, Json::String(v)))
                .collect(),
        ),
    );
    for (field, values) in result.columns {
        let rows = values
            .into_iter()
            .zip(&times)
            .map(|(v, t)| Json::Array(vec![value_json(v), t.clone()]))
            .collect();
        data.insert(field, Json::Array(rows));
    }
    Json::Object(data)
}

fn value_json(v: Option<FieldValue>) -> Json {
    match v {
        None => Json::Null,
        Some(FieldValue::Float(f)) => {
            serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
        }
        Some(FieldValue::Int(i)) => Json::from(i),
        Some(FieldValue::Str(s)) => Json::String(s),
        Some(FieldValue::Bool(b)) => Json::Bool(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const IMEI: &str = "013777946874001";

    fn params(v: Json) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_spec_write_example_is_nine_points_on_three_times() {
        let body = json!({
            "measurement": "telemetry",
            "tags": {"some_tag": "tag_value"},
            "fields": {
                "current": [[1472688000000i64, 1.0], [1472774400000i64, 2.0], [1472860800000i64, 3.0]],
                "voltage": [["2016-09-01T00:00:00Z", 10.0], ["2016-09-02 00:00:00", 20.0], ["2016-09-03", 30.0]],
                "temperature": [["Thu, September 1st 2016", 0.1], ["Fri, September 2nd 2016", 0.2], ["Sat, September 3rd 2016", 0.3]]
            }
        });
        let (points, count) = parse_write(IMEI, &body).unwrap();
        assert_eq!(count, 9);
        assert_eq!(points.len(), 3);
        assert!(points.iter().all(|p| p.fields.len() == 3 && p.imei == IMEI));
        assert_eq!(points[0].tags["some_tag"], "tag_value");
    }

    #[test]
    fn write_errors_name_the_place() {
        let cases = [
            (json!([]), "JSON object"),
            (json!({"fields": {"v": [[1, 2, 3]]}}), "fields.v[0]"),
            (
                json!({"fields": {"v": [["soon", 1]]}}),
                "unrecognised timestamp",
            ),
            (json!({"fields": {"v": [[1, null]]}}), "may not be null"),
            (json!({"fields": {"v": 1}}), "list of [time, value]"),
            (json!({"fields": {"tags": [[1, 1]]}}), "reserved"),
            (json!({"tags": {"tag1": "x"}, "fields": {}}), "tag name"),
            (json!({"tags": {"t": "a b"}, "fields": {}}), "tags.t"),
            (
                json!({"tags": {"product_imei": "1"}, "fields": {}}),
                "set from the URL",
            ),
            (json!({"fields": {}, "extra": 1}), "unknown key 'extra'"),
            (json!({"tags": {}}), "fields is required"),
        ];
        for (body, needle) in cases {
            let err = parse_write(IMEI, &body).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
        // The URL's own IMEI as a tag is accepted (the spec's "general data" example).
        let ok = json!({"tags": {"product_imei": IMEI, "analysis-type": "state-of-health"},
                        "fields": {"curve-data": [["2016-01-01T00:01:20", 1]]}});
        let (points, _) = parse_write(IMEI, &ok).unwrap();
        assert!(!points[0].tags.contains_key(IMEI_TAG));
    }

    #[test]
    fn read_defaults_and_arguments() {
        let now = 1_000_000 * 1_000_000_000;
        let q = parse_read(IMEI, &Map::new(), now).unwrap();
        assert_eq!((q.start_ns, q.end_ns), (now - DEFAULT_RANGE_NS, now));
        assert_eq!(q.measurement, "telemetry");
        assert_eq!(q.fields, Fields::All);
        assert!(q.downsample.is_none() && q.filter.is_none() && q.limit.is_none());

        let q = parse_read(
            IMEI,
            &params(
                json!({"start": "2016-01-01", "end": "2016-01-02", "limit": "100",
                "where": "'voltage' > 14.0", "fields": ["current", "temperature"],
                "tags": "{\"k\": \"v\"}", "ds_interval": "1h", "ds_fucntion": "max"}),
            ),
            now,
        )
        .unwrap();
        assert_eq!(q.limit, Some(100));
        assert_eq!(
            q.fields,
            Fields::List(vec!["current".into(), "temperature".into()])
        );
        assert_eq!(q.tags["k"], "v");
        assert_eq!(q.filter.unwrap().names(), vec!["voltage"]);
        let d = q.downsample.unwrap();
        assert_eq!(d.function, Aggregate::Max);
        assert_eq!(d.interval_ns, 3_600_000_000_000);
    }

    #[test]
    fn read_errors() {
        let now = 1_500_000_000 * 1_000_000_000;
        let cases = [
            (json!({"ds_interval": "5x"}), "ds_interval"),
            (
                json!({"ds_interval": "1m", "ds_function": "derivative"}),
                "ds_function",
            ),
            (json!({"ds_function": "mean"}), "needs ds_interval"),
            (
                json!({"where": "value > 1; DROP MEASUREMENT telemetry"}),
                "where",
            ),
            (json!({"where": "voltage >"}), "where"),
            (
                json!({"start": "2016-01-02", "end": "2016-01-01"}),
                "before start",
            ),
            (json!({"start": "last tuesday"}), "start"),
            (
                json!({"tags": "{tagKey: tagValue}"}),
                "tags must be a JSON object",
            ),
            (json!({"tags": "[1]"}), "tags must be a JSON object"),
            (json!({"limit": "-1"}), "limit"),
            (json!({"fields": []}), "fields is empty"),
            (json!({"fields": "a,*"}), "cannot be combined"),
            (
                json!({"start": "2016-01-01", "end": "2016-02-01", "ds_interval": "1u"}),
                "buckets",
            ),
        ];
        for (p, needle) in cases {
            let err = parse_read(IMEI, &params(p.clone()), now).unwrap_err();
            assert!(err.contains(needle), "{p}: {err}");
        }
    }

    #[test]
    fn params_from_query_and_body() {
        let p = collect_params(Some("fields=a&fields=b&limit=3"), Json::Null).unwrap();
        assert_eq!(p["fields"], json!(["a", "b"]));
        let p = collect_params(Some("limit=3"), json!({"fields": ["x"]})).unwrap();
        assert_eq!(p["fields"], json!(["x"]));
        assert!(collect_params(Some("limit=3"), json!({"limit": 4})).is_err());
        assert!(collect_params(Some("limit=3&limit=4"), Json::Null).is_err());
        assert!(collect_params(Some("colour=red"), Json::Null).is_err());
        assert!(collect_params(None, json!([1])).is_err());
    }
}
