//! `POST /upload_tool_log` (SYSTEM, 201): a manufacturing or repair tool's
//! log entry, written to the time-series store.
//!
//! `time`, `message` and `toolname` are required; `toolname` decides which
//! other fields are permitted (the spec's table, [`PERMITTED`]); anything
//! else is a 400 naming the field.
//!
//! Stored as one point of measurement [`MEASUREMENT`], tagged `toolname`,
//! with every other supplied field as a field (`passed` a boolean, `count` an
//! integer, the rest strings). The point belongs to the unit named by
//! `product_imei`; a log without one (jigs test boards before they are
//! units) is filed under [`NO_UNIT`].

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use ingest::tsdb::{FieldValue, Point};
use serde_json::{Map, Value as Json};

use super::{time, tsdb_error};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::error::ApiError;
use crate::web::route_table;
use crate::web::{success, JsonBody};

/// The measurement tool logs are written to.
pub const MEASUREMENT: &str = "tool_log";

/// The series key of logs that name no unit.
pub const NO_UNIT: &str = "none";

/// Fields every log must have.
const REQUIRED: [&str; 3] = ["time", "message", "toolname"];

/// `toolname` → the other fields it may send (spec: `/upload_tool_log`).
pub const PERMITTED: &[(&str, &[&str])] = &[
    (
        "tiger_test_jig_production",
        &[
            "jig_id",
            "machine_id",
            "user",
            "time",
            "software_version",
            "passed",
            "serial_number",
        ],
    ),
    (
        "tiger_test_jig_repair",
        &[
            "jig_id",
            "machine_id",
            "user",
            "software_version",
            "passed",
            "serial_number",
            "product_imei",
            "count",
        ],
    ),
    (
        "koala_test_jig_production",
        &[
            "jig_id",
            "machine_id",
            "user",
            "software_version",
            "passed",
            "serial_number",
            "product_imei",
            "hostname",
            "control_board_revision",
        ],
    ),
    (
        "bpower20_registration_production",
        &[
            "machine_id",
            "hostname",
            "user",
            "software_version",
            "passed",
            "serial_number",
            "product_imei",
        ],
    ),
    (
        "bpower50_registration_production",
        &[
            "machine_id",
            "hostname",
            "user",
            "software_version",
            "passed",
            "serial_number",
            "product_imei",
        ],
    ),
];

pub(super) fn router() -> Router<AppState> {
    route_table([("/upload_tool_log", post(upload))])
}

async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    req: Request,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let JsonBody(body) = JsonBody::from_request(req, &state).await?;
    let point = parse(&body)?;
    state.timeseries.write(&[point]).await.map_err(tsdb_error)?;
    Ok(success(
        StatusCode::CREATED,
        "Log uploaded successfully",
        Json::Null,
    ))
}

/// The body → the point to store; a validation error per bad field.
pub fn parse(body: &Json) -> Result<Point, ApiError> {
    let Json::Object(body) = body else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object with time, message, toolname and the tool's fields"
                .into(),
        ));
    };
    let mut errors = Map::new();
    let mut err = |field: &str, msg: String| {
        errors.insert(field.to_owned(), Json::String(msg));
    };
    for f in REQUIRED {
        if body.get(f).is_none_or(Json::is_null) {
            err(f, format!("field '{f}' is required"));
        }
    }
    let toolname = body.get("toolname").and_then(Json::as_str).unwrap_or("");
    let permitted = PERMITTED.iter().find(|(t, _)| *t == toolname).map(|p| p.1);
    match (permitted, body.get("toolname")) {
        (None, Some(v)) if !v.is_null() => err(
            "toolname",
            format!(
                "unknown toolname {v}; one of: {}",
                PERMITTED.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
            ),
        ),
        _ => {}
    }
    let mut time_ns = 0;
    match body.get("time") {
        Some(v) if !v.is_null() => match time::parse_json(v) {
            Ok(t) => time_ns = t,
            Err(e) => err("time", e),
        },
        _ => {}
    }
    let mut fields: Vec<(String, FieldValue)> = Vec::new();
    let mut imei = None;
    for (name, value) in body {
        if name == "time" || name == "toolname" {
            continue;
        }
        if name != "message" {
            if let Some(allowed) = permitted {
                if !allowed.contains(&name.as_str()) {
                    err(
                        name,
                        format!(
                            "field '{name}' is not permitted for toolname '{toolname}'; permitted: {}",
                            allowed.join(", ")
                        ),
                    );
                    continue;
                }
            }
        }
        let typed = match (name.as_str(), value) {
            (_, Json::Null) => continue,
            ("passed", Json::Bool(b)) => FieldValue::Bool(*b),
            ("passed", other) => {
                err(name, format!("'passed' must be true or false, got {other}"));
                continue;
            }
            ("count", v) if v.is_i64() => FieldValue::Int(v.as_i64().unwrap_or_default()),
            ("count", other) => {
                err(name, format!("'count' must be an integer, got {other}"));
                continue;
            }
            ("product_imei", Json::String(s)) if s.is_empty() => continue,
            ("product_imei", Json::String(s)) => {
                if s.len() > 16 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    err(
                        name,
                        format!("'product_imei' must be an IMEI (digits), got {s:?}"),
                    );
                } else {
                    imei = Some(s.clone());
                }
                continue;
            }
            ("product_imei", other) => {
                err(
                    name,
                    format!("'product_imei' must be a string of digits, got {other}"),
                );
                continue;
            }
            (_, Json::String(s)) if s.contains(['\n', '\r']) => {
                err(name, format!("'{name}' cannot contain line breaks"));
                continue;
            }
            (_, Json::String(s)) => FieldValue::Str(s.clone()),
            (_, Json::Number(n)) if name != "message" => FieldValue::Str(n.to_string()),
            (_, other) => {
                err(name, format!("'{name}' must be a string, got {other}"));
                continue;
            }
        };
        fields.push((name.clone(), typed));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tags = std::collections::BTreeMap::new();
    tags.insert("toolname".to_owned(), toolname.to_owned());
    Ok(Point {
        measurement: MEASUREMENT.into(),
        imei: imei.unwrap_or_else(|| NO_UNIT.into()),
        tags,
        fields,
        time_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec_example() -> Json {
        json!({
            "time": "2020-11-05T10:25:30Z",
            "message": "{\"serials\": {\"pcb\": \"BX0020-417157-M\"}, \"input_pv\": {\"value\": \"5.150\", \"pass\": true}}",
            "toolname": "bpower20_registration_production",
            "hostname": "CN-REG03",
            "machine_id": "593bfa0c",
            "passed": true,
            "product_imei": "866557056339858",
            "serial_number": "",
            "software_version": "0.3.0",
            "user": "mfg.sunworth@bboxx.co.uk",
        })
    }

    /// A number is not an IMEI (it was stored as a field of the logs that
    /// name no unit); the document says a string of digits.
    #[test]
    fn a_numeric_product_imei_is_refused() {
        let mut body = spec_example();
        body["product_imei"] = json!(866557056339858_u64);
        let Err(ApiError::Validation(errors)) = parse(&body) else {
            panic!("accepted");
        };
        assert!(errors.contains_key("product_imei"), "{errors:?}");
    }

    #[test]
    fn the_spec_example_is_one_point_of_the_unit() {
        let p = parse(&spec_example()).unwrap();
        assert_eq!(p.imei, "866557056339858");
        assert_eq!(p.measurement, "tool_log");
        assert_eq!(p.tags["toolname"], "bpower20_registration_production");
        assert!(p
            .fields
            .contains(&("passed".into(), FieldValue::Bool(true))));
        assert!(p.fields.iter().any(|(f, _)| f == "message"));
        assert!(!p.fields.iter().any(|(f, _)| f == "product_imei"));
    }

    #[test]
    fn the_toolname_decides_the_fields() {
        let mut body = spec_example();
        body["jig_id"] = json!("J1");
        let Err(ApiError::Validation(e)) = parse(&body) else {
            panic!("jig_id is not permitted for bpower20")
        };
        assert!(e["jig_id"].as_str().unwrap().contains("not permitted"));

        let mut body = spec_example();
        body["toolname"] = json!("hammer");
        let Err(ApiError::Validation(e)) = parse(&body) else {
            panic!("unknown toolname")
        };
        assert!(e["toolname"].as_str().unwrap().contains("unknown toolname"));

        let Err(ApiError::Validation(e)) = parse(&json!({"toolname": "tiger_test_jig_production"}))
        else {
            panic!("time and message are required")
        };
        assert!(e.contains_key("time") && e.contains_key("message"));

        let p = parse(&json!({"time": 1604571930000i64, "message": "ok",
            "toolname": "tiger_test_jig_production", "jig_id": 7, "passed": false}))
        .unwrap();
        assert_eq!(p.imei, NO_UNIT);
        assert!(p
            .fields
            .contains(&("jig_id".into(), FieldValue::Str("7".into()))));
    }
}
