//! `GET /v1/openapi.json`: an OpenAPI 3.0 document generated from the
//! catalogue and the list of action routes (the original API had none).
//!
//! Table operations take their schemas from the catalogue columns, with the
//! constraints `values::coerce` and `generic::validate_body` enforce; action
//! routes take theirs from [`action_contract`], next to the constants of the
//! handlers they describe. `tests/openapi.rs` validates the document with a
//! standard validator, fuzzes the server from it (schemathesis) and drives a
//! client generated from it, so the document and the server cannot drift
//! apart unnoticed.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value as Json};

use crate::actions::manufacturing::{
    ProductKind, HYENA_PCB_PART_TYPE, MAX_BATTERY_SERIAL, PCB_IMEI, PCB_ROUTES, PCB_TEXT_FIELDS,
    PRODUCT_FIELDS, SIM_PART_TYPE,
};
use crate::app::AppState;
use crate::catalogue::{Catalogue, Column, ColumnType, Table};
use crate::console::{assets, Asset, AssetSet};
use crate::data::time::{MAX_ABS_MS, YEARS_PATTERN};
use crate::data::tool_log::PERMITTED;
use crate::dcm::Category;
use crate::routes::ACTION_ROUTES;
use crate::values::DATETIME_PATTERN;
use axum::http::StatusCode;

pub(super) fn router() -> Router<AppState> {
    let csp = crate::console::content_security_policy(None);
    let page = {
        let csp = csp.clone();
        move |headers: HeaderMap| {
            let csp = csp.clone();
            async move { DOCS.respond(&headers, "index.html", &csp) }
        }
    };
    let file = move |headers: HeaderMap, Path(path): Path<String>| {
        let csp = csp.clone();
        async move { DOCS.respond(&headers, &path, &csp) }
    };
    Router::new()
        .route("/openapi.json", get(document))
        .route("/docs", get(page))
        .route("/docs/{*path}", get(file))
}

/// The browsable reference at `/v1/docs`: Swagger UI (vendored by
/// `scripts/vendor-console.sh`, with its licence) started on this server's
/// document by `init.js`; served like the console's files, under the same
/// Content-Security-Policy.
const DOCS_ASSETS: &[Asset] = assets![
    "docs-ui":
    "index.html",
    "init.js",
    "vendor/VERSIONS",
    "vendor/swagger-ui/LICENSE",
    "vendor/swagger-ui/NOTICE",
    "vendor/swagger-ui/swagger-ui-bundle.js",
    "vendor/swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
    "vendor/swagger-ui/swagger-ui.css",
];

static DOCS: AssetSet = AssetSet::new("reference file", DOCS_ASSETS);

async fn document(State(state): State<AppState>) -> axum::Json<Json> {
    axum::Json(build(&state.catalogue))
}

/// The JSON schema of one catalogue column, with the constraints
/// `values::coerce` enforces on it (type, format, options, length) and
/// `nullable` from the catalogue's `not_null`.
pub(crate) fn column_schema(c: &Column) -> Json {
    let mut p = match c.ty {
        ColumnType::Int => json!({"type": "integer", "format": "int64"}),
        ColumnType::Float => json!({"type": "number", "format": "double"}),
        ColumnType::Boolean => json!({"type": "boolean"}),
        ColumnType::Datetime => json!({"type": "string", "format": "date-time",
            "example": "2016-07-01T12:34:45.123456"}),
        ColumnType::Date => json!({"type": "string", "format": "date"}),
        ColumnType::Array => json!({"type": "array", "items": {}}),
        ColumnType::String | ColumnType::Text => json!({"type": "string"}),
    };
    if !c.not_null {
        p["nullable"] = json!(true);
    }
    if let Some(o) = &c.options {
        // In OpenAPI 3.0 `nullable` does not extend an `enum`.
        let mut values: Vec<Json> = o.iter().map(|v| json!(v)).collect();
        if !c.not_null {
            values.push(Json::Null);
        }
        p["enum"] = Json::Array(values);
    }
    if let Some(m) = c.max_len {
        p["maxLength"] = json!(m);
    }
    if !c.description.is_empty() {
        p["description"] = json!(c.description);
    }
    p
}

/// A timestamp as the server writes it (`values::format_datetime`): the
/// spec's zone-less UTC form, which RFC 3339's `date-time` does not admit,
/// so it is stated by a pattern (docs/decisions.md, issue 22).
pub(crate) fn datetime_read_schema() -> Json {
    json!({"type": "string", "pattern": DATETIME_PATTERN, "example": "2016-07-01T12:34:45.123456",
           "description": "UTC, without a zone, with microseconds: YYYY-MM-DDTHH:MM:SS.ffffff"})
}

/// The schema of a column in a row the server returns: as [`column_schema`]
/// (which requests use: the server reads RFC 3339 and more), but a
/// timestamp in the form the server writes.
pub(crate) fn read_column_schema(c: &Column) -> Json {
    let mut s = column_schema(c);
    if c.ty == ColumnType::Datetime {
        let column = s["description"].as_str().map(str::to_owned);
        s = datetime_read_schema();
        if !c.not_null {
            s["nullable"] = json!(true);
        }
        if let Some(column) = column {
            let form = s["description"].as_str().unwrap_or_default().to_owned();
            s["description"] = json!(format!("{column} ({form})"));
        }
    }
    s
}

/// What a schema is for: a row as returned, a POST body, a PUT body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Read,
    Create,
    Update,
}

/// The schema of a table's rows (`Read`) or of a write body. Write bodies
/// follow `generic::validate_body`: unknown fields are refused, columns the
/// server sets (meta data, integer ids; the key on PUT) are ignored
/// whatever they hold, and on POST the not-null columns without a default
/// are required.
fn table_schema(table: &Table, shape: Shape) -> Json {
    let mut props = Map::new();
    for c in &table.columns {
        let ignored =
            shape != Shape::Read && (c.is_system() || (shape == Shape::Update && c.primary_key));
        if shape == Shape::Read && c.is_write_only() {
            continue;
        }
        let schema = if ignored {
            json!({"description": "Set by the server; ignored when sent"})
        } else {
            let mut s = if shape == Shape::Read {
                read_column_schema(c)
            } else {
                column_schema(c)
            };
            if c.is_write_only() {
                s["writeOnly"] = json!(true);
            }
            if c.name == "password" {
                // generic::prepare_secret_columns
                s["minLength"] = json!(8);
            }
            s
        };
        props.insert(c.name.clone(), schema);
    }
    // Client generators name their models after the title.
    let title = match shape {
        Shape::Read => table.title.clone(),
        Shape::Create => format!("{} create", table.title),
        Shape::Update => format!("{} update", table.title),
    };
    let mut s = json!({"type": "object", "title": title, "properties": props});
    if shape != Shape::Read {
        s["additionalProperties"] = json!(false);
    }
    if !table.description.is_empty() {
        s["description"] = json!(table.description);
    }
    let required: Vec<&str> = table
        .columns
        .iter()
        .filter(|c| match shape {
            Shape::Read => !c.is_write_only(),
            Shape::Create => {
                c.not_null
                    && c.default.is_none()
                    && !c.is_system()
                    && !super::natural_keys::assigned(table, c)
            }
            Shape::Update => false,
        })
        .map(|c| c.name.as_str())
        .collect();
    // OpenAPI 3.0 forbids an empty `required`.
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    s
}

fn schema_ref(name: &str) -> Json {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `{"status": "success", "message", "data": <data>}` (`web::success`).
fn envelope(data: Json) -> Json {
    json!({"type": "object", "required": ["status", "message", "data"], "properties": {
        "status": {"type": "string", "enum": ["success"]},
        "message": {},
        "data": data,
    }})
}

/// The schema of a path parameter, by its name: the type the handler
/// parses it as and the catalogue column it names.
fn path_param_schema(cat: &Catalogue, name: &str) -> Json {
    match name {
        "product_imei" => {
            let imei = cat
                .table("product")
                .and_then(|t| t.column("product_imei"))
                .map(column_schema)
                .unwrap_or_else(|| json!({"type": "string"}));
            json!({"type": "string", "maxLength": imei["maxLength"], "minLength": 1})
        }
        "product_kind" => json!({"type": "string", "enum": ProductKind::NAMES}),
        "name" => json!({"type": "string", "minLength": 1}),
        "path" => json!({"type": "string", "minLength": 1}),
        // repair_id, alert_id, subscriber_id, delivery_id, rtc_dead_letter_id
        _ => json!({"type": "integer", "format": "int64"}),
    }
}

fn path_params(cat: &Catalogue, path: &str) -> Vec<Json> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true,
                   "schema": path_param_schema(cat, name)})
        })
        .collect()
}

fn query_param(name: &str, schema: Json, required: bool, description: &str) -> Json {
    let mut p = json!({"name": name, "in": "query", "required": required, "schema": schema});
    if !description.is_empty() {
        p["description"] = json!(description);
    }
    p
}

fn paging_params() -> Vec<Json> {
    vec![
        query_param(
            "page",
            json!({"type": "integer", "minimum": 1, "maximum": u64::MAX}),
            false,
            "Page number, from 1",
        ),
        query_param(
            "results_per_page",
            json!({"type": "integer", "minimum": 1, "maximum": u64::MAX}),
            false,
            "Rows per page (capped by the server's maximum)",
        ),
    ]
}

fn q_param() -> Json {
    query_param(
        "q",
        json!({"type": "string"}),
        false,
        "JSON query: filters ([{name, op, val}]), limit, offset, order_by, group_by, single; \
         e.g. {\"filters\":[{\"name\":\"name\",\"op\":\"like\",\"val\":\"%enable%\"}]}",
    )
}

/// The documented inputs and output of one operation.
struct Contract {
    query: Vec<Json>,
    body: Option<Json>,
    /// Whether a request without a body is refused.
    body_required: bool,
    status: &'static str,
    response: Option<Json>,
    /// Error statuses beyond the ones every operation has, with why.
    errors: Vec<(&'static str, &'static str)>,
}

impl Contract {
    fn new(status: &'static str, response: Option<Json>) -> Self {
        Self {
            query: Vec::new(),
            body: None,
            body_required: true,
            status,
            response,
            errors: Vec::new(),
        }
    }
    /// A further error status the handler answers with, in the error
    /// envelope.
    fn error(mut self, status: &'static str, why: &'static str) -> Self {
        self.errors.push((status, why));
        self
    }
    fn body(mut self, schema: Json) -> Self {
        self.body = Some(schema);
        self
    }
    /// A body the handler reads when there is one (an empty body is `{}`).
    fn optional_body(mut self, schema: Json) -> Self {
        self.body = Some(schema);
        self.body_required = false;
        self
    }
    fn query(mut self, params: Vec<Json>) -> Self {
        self.query = params;
        self
    }
}

fn object_schema(required: &[&str], properties: Json) -> Json {
    let mut s = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    s
}

/// The request and response of an action route. Constraints here are the
/// ones its handler enforces (`actions::*`, `http::dcm`, ...); the
/// schemathesis run in `tests/openapi.rs` sends data valid and invalid by
/// this document and fails when the server disagrees with it.
fn action_contract(cat: &Catalogue, method: &str, path: &str) -> Contract {
    let col = |table: &str, column: &str| {
        cat.table(table)
            .and_then(|t| t.column(column))
            .map(column_schema)
            .unwrap_or_else(|| json!({}))
    };
    let ok = |data: Json| Contract::new("200", Some(envelope(data)));
    let flag = |name: &str| object_schema(&[name], json!({name: {"type": "boolean"}}));
    let entity_ref = json!({"type": "integer", "format": "int64"});
    let transaction_id = json!({"type": "string", "minLength": 1, "pattern": "\\S",
        "maxLength": super::dcm::MAX_TRANSACTION_ID,
        "description": "Unique per command; a repeated id is refused"});
    // actions::entity::entities_body
    let entities = json!({"type": "object", "description": "The unit's IMEI -> the names of its entities now",
            "additionalProperties": {"type": "array", "items": {"type": "string"}}});
    match (method, path) {
        ("post", "/auth/login") => {
            let creds = object_schema(
                &["username", "password"],
                json!({"username": {"type": "string"}, "password": {"type": "string", "format": "password"}}),
            );
            Contract::new(
                "200",
                Some(object_schema(
                    &["status", "message"],
                    json!({"status": {"type": "string", "enum": ["success"]},
                       "message": object_schema(&["login_successful"], json!({"login_successful": object_schema(
                           &["username", "API_token", "token_expiry", "permissions"],
                           json!({"username": {"type": "string"}, "entity_id": {"type": "integer", "nullable": true},
                                  "display_name": {"type": "string", "nullable": true}, "name": {"type": "string"},
                                  "user_product_visibility": {"type": "string", "enum": ["GLOBAL", "ENTITY"]},
                                  "hub_id": {"type": "integer", "nullable": true}, "shop_id": {"type": "integer", "nullable": true},
                                  "API_token": {"type": "string", "description": "Send as `Authorization: Token token=<API_token>`"},
                                  "token_expiry": {"type": "string"},
                                  "permissions": {"type": "string", "enum": PERMISSIONS}}))}))}),
                )),
            )
            // The form body (`requests.post(url, data=...)` in the spec) is
            // accepted too, and named in the summary only: openapi-python-client
            // 0.29 generates code that does not import for an operation with
            // two body types.
            .body(creds)
        }
        ("get", "/auth/validate_user") => ok(json!({"type": "string", "enum": ["True", "False"]}))
            .query(vec![query_param("username", json!({"type": "string"}), true, "")]),
        ("get", "/auth/validate_user_and_password") => {
            ok(json!({"type": "string", "enum": ["True", "False"]})).query(vec![
                query_param("username", json!({"type": "string"}), true, ""),
                query_param("password", json!({"type": "string"}), true, ""),
            ])
        }
        ("get", "/whoami") => ok(object_schema(
            &["user_id", "username", "permissions", "user_product_visibility"],
            json!({"user_id": {"type": "integer"}, "username": {"type": "string"},
                   "permissions": {"type": "string", "enum": PERMISSIONS},
                   "user_product_visibility": {"type": "string", "enum": ["GLOBAL", "ENTITY"]},
                   "entity_id": {"type": "integer", "nullable": true}}),
        )),
        ("get", "/home" | "/health" | "/ready") => Contract::new("200", None),
        ("get", "/openapi.json") => Contract::new("200", Some(json!({"type": "object"}))),
        (
            "put",
            "/products/{product_imei}/enable"
            | "/products/{product_imei}/disable"
            | "/products/{product_imei}/enable_tamper_switch"
            | "/products/{product_imei}/disable_tamper_switch",
        ) => ok(json!({"nullable": true, "description": "null; the message names the new status"})),
        ("put", "/products/{product_imei}/assign_entity" | "/products/{product_imei}/remove_entity") => {
            ok(entities.clone()).body(object_schema(&["entity_id"], json!({"entity_id": entity_ref})))
        }
        ("put", "/products/{product_imei}/change_entity") => ok(entities).body(object_schema(
            &["old_entity_id", "new_entity_id"],
            json!({"old_entity_id": entity_ref, "new_entity_id": entity_ref}),
        )),
        ("put", "/products/{product_imei}/change_state") => ok(null_data("null")).body(object_schema(
            &["new_state"],
            json!({"new_state": {"type": "integer", "minimum": 1, "maximum": 9,
                                 "description": "state_type_id; the transition table decides which are allowed"}}),
        )),
        ("put", "/products/{product_imei}/set_dcm_enabled_flag") => ok(null_data("null")).body(flag("enabled")),
        ("put", "/products/{product_imei}/set_is_payg") => ok(null_data("null")).body(flag("is_payg")),
        ("put", "/products/{product_imei}/update_software") => ok(null_data("null")).body(object_schema(
            &["software"],
            json!({"software": {"description": "software_version_type_id or software name",
                                "oneOf": [{"type": "integer"}, {"type": "string"}]}}),
        )),
        // fleet::available_networks
        ("get", "/products/{product_imei}/available_networks") => ok(object_schema(
            &["networks"],
            json!({"networks": {"type": "array", "items": schema_ref("network"),
                "description": "Networks in the country that a SIM provider of the unit's current parts uses"}}),
        ))
        .query(vec![query_param(
            "mcc",
            json!({"type": "integer", "minimum": 0, "maximum": 999}),
            true,
            "Mobile country code",
        )]),
        ("get", "/products/{product_imei}/connectivity_reliability_rate") => ok(object_schema(
            &["connectivity_reliability_rate"],
            json!({"connectivity_reliability_rate": {"type": "number", "minimum": 0,
                "description": "Connections made / connections expected (one per 4 hours)"}}),
        ))
        .query(vec![
            query_param("start", json!({"type": "string", "format": "date-time"}), false, ""),
            query_param("end", json!({"type": "string", "format": "date-time"}), false, ""),
        ]),
        // fleet::parameter_history; with `date`, only what was active then (shown as active).
        ("get", "/products/{product_imei}/parameters/history") => ok(object_schema(
            &["part_parameters", "product_parameters"],
            json!({"part_parameters": {"type": "object",
                       "description": "part_id -> that part's parameters, for the unit's parts (with `date`: those on it then)",
                       "additionalProperties": {"type": "array", "items": schema_ref("part_parameter")}},
                   "product_parameters": {"type": "array", "items": schema_ref("product_parameter")}}),
        ))
        .query(vec![query_param(
            "date",
            json!({"type": "string", "format": "date-time"}),
            false,
            "The active parameter set at this time instead of the full history",
        )]),
        // fleet::locations and dashboard::dashboard2 answer without the envelope.
        ("get", "/products/locations") => Contract::new("200", Some(object_schema(
            &["data"],
            json!({"data": {"type": "array", "items": object_schema(
                &["product_imei"],
                json!({"product_imei": {"type": "string"}, "latitude": {"type": "string", "nullable": true},
                       "longitude": {"type": "string", "nullable": true},
                       "error_radius": {"type": "integer", "nullable": true}}),
            )}}),
        )))
        .query(paging_params()),
        ("get", "/current_enable_status") => ok(json!({"type": "array",
            "items": crate::actions::dashboard::EnableStatus::schema(|t, c| {
                cat.table(t).and_then(|t| t.column(c)).map(read_column_schema).unwrap_or_else(|| json!({}))
            })}))
        .query(paging_params()),
        ("get", "/dashboard2") => {
            let mut q = paging_params();
            q.insert(0, q_param());
            Contract::new("200", Some(object_schema(
                &["data", "num_results", "num_results_filtered"],
                json!({"data": {"type": "array", "items": {"type": "object",
                           "description": "A unit with its state, enable status, software, entities and open alerts"}},
                       "num_results": {"type": "integer", "description": "Units visible to the caller"},
                       "num_results_filtered": {"type": "integer", "description": "Units q selects"}}),
            )))
            .query(q)
        }
        ("post", "/products/{product_imei}/add_payment_command") => {
            // dcm::check_value: the value's sign follows the category, and its size is bounded
            // by what a unit can hold (dcm::MAX_CREDIT_SECONDS).
            let max = crate::dcm::MAX_CREDIT_SECONDS;
            let rules = [
                (Category::Payment, json!({"minimum": 1, "maximum": max})),
                (Category::BadPayment, json!({"minimum": -max, "maximum": -1})),
                (Category::ZeroCommand, json!({"enum": [0]})),
            ];
            let variants: Vec<Json> = rules
                .into_iter()
                .map(|(category, bound)| {
                    let mut value = json!({"type": "integer", "format": "int64", "description": "Seconds of credit"});
                    value.as_object_mut().expect("object").extend(bound.as_object().expect("object").clone());
                    json!({"type": "object", "required": ["value", "category", "transaction_id"], "properties": {
                        "value": value,
                        "category": {"type": "string", "enum": [category.as_str()]},
                        "transaction_id": transaction_id.clone(),
                    }})
                })
                .collect();
            Contract::new("201", Some(envelope(null_data("null")))).body(json!({"oneOf": variants}))
        }
        ("post", "/products/{product_imei}/force_reset") => Contract::new("201", Some(envelope(object_schema(
            &["outstanding_payments", "last_known_balance"],
            json!({"outstanding_payments": {"type": "integer", "format": "int64",
                       "description": "Net seconds of the payments and bad-payments the unit had not acknowledged (now void)"},
                   "last_known_balance": {"type": "integer", "format": "int64", "nullable": true,
                       "description": "The balance the unit last reported; null if it never did"}}),
        ))))
            .body(object_schema(
                &["transaction_id"],
                json!({"transaction_id": transaction_id}),
            )),
        ("get", "/products/{product_imei}/data") => ok(json!({
            "type": "object", "required": ["measurement", "tags"],
            "properties": {"measurement": {"type": "string"}, "tags": {"type": "object", "additionalProperties": {"type": "string"}}},
            "additionalProperties": {"type": "array", "description": "One field: [value, time] pairs, oldest first",
                                     "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {}}}}))
        .query(vec![
            query_param("start", json!({"type": "string"}), false, "a time in any form the spec lists (RFC 3339 or ISO 8601 with or without zone, a date, or milliseconds since the epoch) (default: a day before end)"),
            query_param("end", json!({"type": "string"}), false, "a time in any form the spec lists (RFC 3339 or ISO 8601 with or without zone, a date, or milliseconds since the epoch) (default: now)"),
            query_param("fields", json!({"type": "string"}), false, "`*`, comma-separated names or a JSON list"),
            query_param("measurement", json!({"type": "string"}), false, "Default: telemetry"),
            query_param("limit", json!({"type": "integer", "minimum": 0}), false, "0: no limit"),
            query_param("where", json!({"type": "string"}), false, "Filter on fields, e.g. `battery_voltage > 12`"),
            query_param("tags", json!({"type": "string"}), false, "JSON object of tag values"),
            query_param("ds_interval", json!({"type": "string"}), false, "Downsampling interval, e.g. 1h"),
            query_param("ds_function", json!({"type": "string"}), false, "mean, min, max, sum, count, first, last"),
        ]),
        ("post", "/products/{product_imei}/data") => {
            // product_data::parse_write refuses any other key.
            let mut body = object_schema(
                &["fields"],
                json!({"measurement": {"type": "string"}, "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                       "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {}}}}}),
            );
            body["additionalProperties"] = json!(false);
            ok(null_data("null; the message counts the points written")).body(body)
        }
        ("put", "/alerts/{alert_id}/dismiss") => {
            let mut b = object_schema(
                &[],
                json!({"dismissal_reason": col("alert", "dismissal_reason"), "extra_info": col("alert", "extra_info"),
                       "repair_id": {"type": "integer", "format": "int64", "nullable": true}}),
            );
            b["additionalProperties"] = json!(false);
            ok(null_data("null")).body(b)
        }
        ("post", "/sms/delivery_receipt") => ok(schema_ref("sms_history")).body(object_schema(
            &["message_reference"],
            json!({"message_reference": {"type": "string", "minLength": 1, "pattern": "\\S"},
                   "status": {"type": "string", "enum": ["delivered", "failed", "undelivered"],
                              "description": "Default delivered; any letter case"}}),
        )),
        // fleet::suggest_energy_limit: the limits are Wh, null when not set for the unit.
        ("put", "/products/{product_imei}/suggest_energy_limit") => ok(object_schema(
            &["requested", "applied", "max_energy_limit", "min_energy_limit", "energy_limit_cap", "bounded"],
            json!({"requested": {"type": "number"},
                   "applied": {"type": "number", "description": "requested, within the bounds below"},
                   "max_energy_limit": {"type": "number", "nullable": true,
                       "description": "The lower of the default maximum and the cap"},
                   "min_energy_limit": {"type": "number", "nullable": true},
                   "energy_limit_cap": {"type": "number", "nullable": true},
                   "bounded": {"type": "boolean", "description": "applied differs from requested"}}),
        ))
        .body(object_schema(
            &["energy_limit"],
            json!({"energy_limit": {"description": "Wh; a number, or a number in a string",
                "oneOf": [{"type": "number", "minimum": 0},
                          {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}]}}),
        )),
        ("post", "/channels/{name}/subscribe") => Contract::new("201", Some(envelope(object_schema(
            &["url", "channel_name", "key"],
            json!({"url": {"type": "string"}, "channel_name": {"type": "string"},
                   "key": {"type": "string", "description": "The signing key; shown this once"}}),
        ))))
        .body(object_schema(
            &["url"],
            json!({"url": {"type": "string", "format": "uri"}}),
        )),
        ("post", "/channels/{name}/unsubscribe") => ok(null_data("null")).body(object_schema(
            &["url"],
            json!({"url": {"type": "string", "format": "uri"}}),
        )),
        ("post", "/products/{product_imei}/command_request") => ok(schema_ref("mt_sent")).body(object_schema(
            &["command"],
            json!({"command": {"type": "string", "minLength": 1}}),
        )),
        ("post", "/products/{product_imei}/rtc_online_status") => ok(object_schema(
            &["rtc_connection_history_id"],
            json!({"rtc_connection_history_id": {"type": "integer", "format": "int64"}}),
        ))
        .body(object_schema(
            &["status"],
            json!({"status": {"type": "string", "enum": ["online", "offline"]}}),
        )),
        ("put", "/repairs/{repair_id}/send_events") => {
            let mut b = object_schema(&["event"], json!({"event": {"type": "string"}}));
            b["additionalProperties"] = json!(false);
            ok(json!({"type": "object", "maxProperties": 0, "description": "Always {}"})).body(b)
        }
        ("put", "/repairs/{repair_id}/send_inputs") => {
            // repairs::http::inputs_body: an object, or a list of objects merged.
            let inputs = json!({"type": "object", "description":
                "Input ident -> value, for the inputs of the repair's current state (GET current_state): \
                 a number (int, float), a string (string, text, datetime, selection) or a list (multi selection)",
                "additionalProperties": {"oneOf": [{"type": "number"}, {"type": "string"},
                    {"type": "array", "items": {"oneOf": [{"type": "number"}, {"type": "string"}]}}]}});
            ok(json!({"type": "object", "maxProperties": 0, "description": "Always {}"}))
                .body(json!({"oneOf": [inputs.clone(), {"type": "array", "items": inputs}]}))
        }
        ("post", "/upload_tool_log") => Contract::new("201", Some(envelope(null_data("null"))))
            .body(tool_log_schema()),
        ("post", p) if p.starts_with("/parts/create_") => {
            let route = PCB_ROUTES.iter().find(|r| r.path == p);
            let status = match route.map(|r| r.status) {
                Some(StatusCode::CREATED) => "201",
                _ => "200",
            };
            let part_type = route.map_or(0, |r| r.part_type);
            Contract::new(status, Some(envelope(pcb_data_schema()))).body(pcb_request_schema(cat, part_type))
        }
        ("post", "/products/create_product/{product_kind}") => {
            // The kind is a path parameter, so the body cannot depend on it: the
            // battery is documented as optional and required by every kind but hub2.
            ok(product_data_schema()).body(product_request_schema(cat, None))
        }
        ("post", "/products/create_hub2") => ok(product_data_schema())
            .body(pcb_and_product_schema(cat, ProductKind::Hub2)),
        ("post", "/products/create_enterprise") => ok(product_data_schema())
            .body(pcb_and_product_schema(cat, ProductKind::Enterprise)),
        ("post", "/products/{product_imei}/send_wakeup") => ok(schema_ref("sms_history"))
            .error("502", "The SMS provider did not take the SMS (status Failed); `data` is the sms_history row")
            .error("503", "No SMS provider is configured (status NotSent); `data` is the sms_history row"),
        ("put", "/products/{product_imei}/lock_software") => ok(object_schema(
            &["software_lock_id", "software_lock_name"],
            json!({"software_lock_id": {"type": "integer", "format": "int64", "nullable": true},
                   "software_lock_name": {"type": "string", "nullable": true}}),
        ))
        .optional_body(object_schema(
            &[],
            json!({"software": {"nullable": true, "oneOf": [{"type": "integer", "format": "int64"}, {"type": "string"}],
                "description": "software_version_type_id or software name to lock to; null, blank or absent removes the lock"}}),
        )),
        ("put", "/products/{product_imei}/expire_software_updates") => {
            ok(null_data("null; the message says how many updates expired"))
        }
        ("post", "/products/{product_imei}/sync" | "/products/{product_imei}/status_update") => {
            ok(schema_ref("mt_sent"))
        }
        ("post", "/products/{product_imei}/force_connection") => ok(json!({"oneOf": [
                schema_ref("mt_sent"),
                object_schema(&["sms_history_id"], json!({"sms_history_id": {"type": "integer", "format": "int64",
                    "description": "A unit without RTC is sent a WAKEUP SMS"}})),
            ]}))
            .error("502", "Not an RTC unit, and the SMS provider did not take the WAKEUP SMS")
            .error("503", "Not an RTC unit, and no SMS provider is configured"),
        ("get", _) if path.starts_with("/console") => Contract::new("200", None),
        ("get", "/docs" | "/docs/{path}") => Contract::new("200", None),
        // webhooks::subscriptions::list_deliveries: a list body, not the envelope.
        ("get", "/subscribers/{subscriber_id}/deliveries") => {
            let delivery = json!({"type": "object", "required": ["webhook_delivery_id", "status", "attempt_log"],
                "properties": {"webhook_delivery_id": {"type": "integer"}, "status": {"type": "string"},
                               "channel": {"type": "string"}, "attempts": {"type": "integer"},
                               "attempt_log": {"type": "array", "items": {"type": "object"}}}});
            Contract::new("200", Some(object_schema(
                &["num_results", "page", "total_pages", "objects"],
                json!({"num_results": {"type": "integer"}, "page": {"type": "integer"},
                       "total_pages": {"type": "integer"}, "objects": {"type": "array", "items": delivery}}),
            )))
            .query(paging_params())
        }
        ("get", "/products/{product_imei}/get_repair") => ok(object_schema(
            &["repair_id"],
            json!({"repair_id": {"type": "integer", "format": "int64"},
                   "config": {"type": "object", "description": "The workflow's settings for this unit"}}),
        )),
        ("get", "/repairs/{repair_id}/current_state") => ok(object_schema(
            &["ident", "name", "description", "inputs", "events"],
            json!({"ident": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                   "inputs": {"type": "array", "items": {"type": "object", "required": ["ident", "data_type", "label"],
                       "properties": {"ident": {"type": "string"}, "label": {"type": "string"},
                                      "data_type": {"type": "string", "enum": ["int", "float", "string", "text", "datetime", "selection"]}}}},
                   "events": {"type": "array", "items": object_schema(&["ident", "label"],
                       json!({"ident": {"type": "string"}, "label": {"type": "string"}}))}}),
        )),
        ("get", "/repairs/{repair_id}/history") => ok(json!({"type": "array", "items": object_schema(
            &["ident", "name"],
            json!({"ident": {"type": "string"}, "name": {"type": "string"}}),
        )})),
        ("get", "/repairs/list_current_states") => ok(json!({"type": "array", "items": object_schema(
            &["repair_id", "product_imei", "repair_state_id", "repair_state_name"],
            json!({"repair_id": {"type": "integer"}, "product_imei": {"type": "string"},
                   "created_by": {"type": "string", "nullable": true},
                   "repair_state_id": {"type": "string"}, "repair_state_name": {"type": "string"}}),
        )}))
        // repairs::http::list_current_states refuses any other parameter.
        .query(vec![
            query_param("entity_id", json!({"type": "integer", "format": "int64"}), false, "Only units of this entity"),
            query_param("username", json!({"type": "string"}), false, "Only repairs this user created"),
            query_param("repair_state", json!({"type": "string"}), false, "Only repairs in this workflow state"),
        ]),
        // fleet::parts: part_id -> the part with its link, type and replacements.
        ("get", "/products/{product_imei}/parts") => ok(json!({"type": "object",
            "description": "part_id -> a part the unit has or had", "additionalProperties": schema_ref("product_part")})),
        ("get", "/products/{product_imei}/balance_and_pending_payments") => {
            ok(super::dcm::BalanceAndPending::schema())
        }
        // dead_letters::decode adds `reason` to the envelope.
        ("get", "/rtc_dead_letters/{rtc_dead_letter_id}/decode") => {
            let mut s = envelope(json!({"type": "string",
                "description": "`Decoded message: ` and the CBOR message in diagnostic notation, \
                                or `Undecodable message: ` and why"}));
            s["properties"]["reason"] = json!({"type": "string", "nullable": true,
                "description": "Why the message was dead-lettered"});
            s["required"] = json!(["status", "message", "data", "reason"]);
            Contract::new("200", Some(s))
        }
        ("post", "/rtc_import_mo_dead_letters" | "/rtc_import_mt_reply_dead_letters") => ok(object_schema(
            &["imported", "reopened", "already_imported", "rtc_dead_letter_ids", "more_waiting"],
            json!({"imported": {"type": "integer"}, "reopened": {"type": "integer"},
                   "already_imported": {"type": "integer"},
                   "rtc_dead_letter_ids": {"type": "array", "items": {"type": "integer"}},
                   "more_waiting": {"type": "boolean", "description": "More letters than one call takes are waiting"}}),
        )),
        ("post", "/subscribers/{subscriber_id}/deliveries/{delivery_id}/resend") => ok(json!({
            "type": "object", "required": ["webhook_delivery_id", "subscriber_id", "status"],
            "properties": {"webhook_delivery_id": {"type": "integer"}, "subscriber_id": {"type": "integer"},
                           "status": {"type": "string"}}})),
        (
            "put",
            "/rtc_dead_letters/{rtc_dead_letter_id}/replay" | "/rtc_dead_letters/{rtc_dead_letter_id}/discard",
        ) => ok(null_data("null; the message says what was done")),
        ("put", "/repairs/{repair_id}/undo") => ok(object_schema(
            &["ident", "name"],
            json!({"ident": {"type": "string"}, "name": {"type": "string", "description": "In the Accept-Language"}}),
        )),
        // No contract: `tests::every_operation_is_typed` names the operation.
        _ => Contract::new("200", None),
    }
}

/// `data` that is always null (the message says what happened).
fn null_data(description: &str) -> Json {
    json!({"nullable": true, "description": description})
}

/// An integer field read by `actions::int_field` (a JSON integer; the
/// server also takes a string of digits).
fn int_schema(description: &str) -> Json {
    json!({"type": "integer", "format": "int64", "description": description})
}

/// The body of `create_*_pcb`: `manufacturing::PcbRequest::parse`, from its
/// text rules.
fn pcb_request_schema(cat: &Catalogue, default_part_type: i64) -> Json {
    let mut props = Map::new();
    for rule in &PCB_TEXT_FIELDS {
        props.insert(rule.name.into(), rule.schema());
    }
    let manufacturer = cat
        .table("part")
        .and_then(|t| t.column("manufacturer"))
        .map(column_schema)
        .unwrap_or_else(|| json!({"type": "string"}));
    props.insert("manufacturer".into(), manufacturer);
    let pcb_type = if default_part_type == 0 {
        "part_type_id of the PCB (an existing part type)".to_string()
    } else {
        format!("part_type_id of the PCB (an existing part type); default {default_part_type}")
    };
    props.insert("pcb_part_type_id".into(), int_schema(&pcb_type));
    props.insert(
        "sim_part_type_id".into(),
        int_schema(&format!(
            "part_type_id of the SIM (an existing part type); default {SIM_PART_TYPE}"
        )),
    );
    let required: Vec<&str> = PCB_TEXT_FIELDS
        .iter()
        .filter(|r| r.required)
        .map(|r| r.name)
        .collect();
    let mut s = object_schema(&required, Json::Object(props));
    s["description"] = json!(
        "The PCB part's serial is the IMEI, the SIM part's the ICCID (else the IMSI); \
         none of them may exist yet"
    );
    s
}

/// The fields of `manufacturing::ProductRequest::parse`; `kind` decides
/// whether the battery is required (None: the kind is not known from the
/// body).
fn product_request_fields(
    cat: &Catalogue,
    kind: Option<ProductKind>,
) -> (Map<String, Json>, Vec<&'static str>) {
    let mut props = Map::new();
    let mut required = Vec::new();
    let battery_required = kind.is_some_and(ProductKind::needs_battery);
    let mut battery = object_schema(
        &["part_type_id", "serial_number"],
        json!({"part_type_id": int_schema("An existing part type"),
               "serial_number": {"type": "string", "minLength": 1, "maxLength": MAX_BATTERY_SERIAL,
                                 "pattern": "\\S", "description": "A serial no part has yet"}}),
    );
    battery["description"] = json!(if kind.is_some() {
        "The battery part to create and link".to_string()
    } else {
        let needing: Vec<&str> = ProductKind::NAMES
            .into_iter()
            .filter(|n| ProductKind::parse(n).is_some_and(ProductKind::needs_battery))
            .collect();
        format!(
            "The battery part to create and link; required for {}",
            needing.join(", ")
        )
    });
    if !battery_required {
        battery["nullable"] = json!(true);
    } else {
        required.push("battery");
    }
    props.insert("battery".into(), battery);
    props.insert(
        "solar_panel_wattage".into(),
        json!({"nullable": true, "description": "Watts, above 0; a number or a number in a string",
               "oneOf": [{"type": "number", "minimum": 0, "exclusiveMinimum": true},
                         {"type": "string", "pattern": "^(0*[1-9][0-9]*(\\.[0-9]+)?|0*\\.0*[1-9][0-9]*)$"}]}),
    );
    let mut product = Map::new();
    if let Some(t) = cat.table("product") {
        for name in PRODUCT_FIELDS {
            if let Some(c) = t.column(name) {
                product.insert(name.into(), column_schema(c));
            }
        }
    }
    props.insert(
        "product".into(),
        json!({"type": "object", "nullable": true, "additionalProperties": false, "properties": product,
               "description": "Product columns to set (hub_id and shop_id must exist)"}),
    );
    (props, required)
}

/// The body of `create_product/<kind>`.
fn product_request_schema(cat: &Catalogue, kind: Option<ProductKind>) -> Json {
    let (mut props, mut required) = product_request_fields(cat, kind);
    props.insert(
        PCB_IMEI.name.into(),
        with_description(
            PCB_IMEI.schema(),
            "The IMEI of a PCB made by create_*_pcb and not in a product yet",
        ),
    );
    required.insert(0, PCB_IMEI.name);
    object_schema(&required, Json::Object(props))
}

/// The body of `create_hub2` / `create_enterprise`: a PCB request and a
/// product request in one object.
fn pcb_and_product_schema(cat: &Catalogue, kind: ProductKind) -> Json {
    let mut s = pcb_request_schema(cat, HYENA_PCB_PART_TYPE);
    let (props, required) = product_request_fields(cat, Some(kind));
    if let Some(p) = s["properties"].as_object_mut() {
        p.extend(props);
    }
    if let Some(r) = s["required"].as_array_mut() {
        r.extend(required.into_iter().map(Json::from));
    }
    s
}

fn with_description(mut schema: Json, description: &str) -> Json {
    schema["description"] = json!(description);
    schema
}

/// `data` of the PCB routes: the PCB and SIM parts as `part_body` renders them.
fn pcb_data_schema() -> Json {
    object_schema(
        &["pcb", "sim"],
        json!({"pcb": schema_ref("created_part"), "sim": schema_ref("created_sim_part")}),
    )
}

/// `data` of the product routes (`manufacturing::product_data`).
fn product_data_schema() -> Json {
    object_schema(
        &["product", "pcb"],
        json!({"product": schema_ref("created_product"), "pcb": schema_ref("created_part"),
               "sim": schema_ref("created_sim_part"), "battery": schema_ref("created_part")}),
    )
}

/// A table's row schema with some properties replaced or added, under its
/// own title.
fn row_with(cat: &Catalogue, table: &str, title: &str, extra: Json) -> Json {
    let mut s = cat
        .table(table)
        .map(|t| table_schema(t, Shape::Read))
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    s["title"] = json!(title);
    if let (Some(props), Json::Object(extra)) = (s["properties"].as_object_mut(), extra) {
        props.extend(extra);
    }
    s
}

/// Shapes the action routes share, added to `components/schemas`.
fn action_schemas(cat: &Catalogue) -> Vec<(&'static str, Json)> {
    let part_extra = json!({
        "properties": {"type": "object", "nullable": true,
                       "description": "The part's properties (a PCB's imei, imsi, iccid, device_key, serial_number)"},
        "serial": {"type": "string", "nullable": true, "description": "serial_number again, as the spec's examples show it"},
    });
    let mut sim_extra = part_extra.clone();
    sim_extra["imsi"] = json!({"type": "string", "nullable": true});
    vec![
        (
            "created_part",
            row_with(cat, "part", "Created part", part_extra),
        ),
        (
            "created_sim_part",
            row_with(cat, "part", "Created SIM part", sim_extra),
        ),
        (
            "created_product",
            row_with(
                cat,
                "product",
                "Created product",
                json!({"imei": {"type": "string", "description": "product_imei again"}}),
            ),
        ),
        ("product_part", {
            let mut s = row_with(
                cat,
                "part",
                "Product part",
                json!({
                    "part_product_linker": schema_ref("part_product_linker"),
                    "part_type": {"nullable": true, "allOf": [schema_ref("part_type")]},
                    "replacement_part_types": {"type": "array", "items": schema_ref("part_type"),
                        "description": "Part types that may replace this one in the unit's product type"},
                }),
            );
            if let Some(r) = s["required"].as_array_mut() {
                r.extend(
                    ["part_product_linker", "part_type", "replacement_part_types"].map(Json::from),
                );
            }
            s
        }),
        ("mt_sent", {
            let mut s = object_schema(
                &["rtc_message_history_id", "message_reference"],
                json!({"rtc_message_history_id": {"type": "integer", "format": "int64",
                               "description": "The rtc_message_history row that follows the delivery"},
                           "message_reference": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                               "description": "The MT's correlation id"}}),
            );
            s["title"] = json!("MT sent");
            s
        }),
    ]
}

/// The body of `/upload_tool_log`: one variant per tool (`tool_log::PERMITTED`),
/// each with the fields that tool may send.
fn tool_log_schema() -> Json {
    let variants: Vec<Json> = PERMITTED
        .iter()
        .map(|(tool, fields)| {
            let mut props = Map::new();
            for f in *fields {
                let schema = match *f {
                    "passed" => json!({"type": "boolean", "nullable": true}),
                    "count" => json!({"type": "integer", "format": "int64", "nullable": true,
                                      "minimum": i64::MIN, "maximum": i64::MAX}),
                    "product_imei" => json!({"type": "string", "pattern": "^[0-9]{0,16}$", "nullable": true,
                                             "description": "The unit's IMEI; empty or absent: a board not yet in a unit"}),
                    "time" => continue,
                    _ => json!({"nullable": true, "oneOf": [{"type": "string", "pattern": "^[^\\r\\n]*$"}, {"type": "number"}]}),
                };
                props.insert((*f).into(), schema);
            }
            props.insert("toolname".into(), json!({"type": "string", "enum": [tool]}));
            props.insert("time".into(), json!({"description": "RFC 3339 time (years 1678 to 2261) or milliseconds since the epoch",
                "oneOf": [{"type": "string", "format": "date-time", "pattern": YEARS_PATTERN},
                          {"type": "number", "minimum": -MAX_ABS_MS, "maximum": MAX_ABS_MS}]}));
            props.insert("message".into(), json!({"type": "string", "pattern": "^[^\\r\\n]*$"}));
            json!({"type": "object", "title": format!("{tool} log"), "required": ["time", "message", "toolname"],
                   "additionalProperties": false, "properties": props})
        })
        .collect();
    json!({"oneOf": variants, "description": "One log entry of a manufacturing or repair tool"})
}

const PERMISSIONS: [&str; 5] = ["OVERVIEW", "TECHNICAL", "ADMIN", "FACTORY", "SYSTEM"];

/// `listStateTypes`-style ids from the method and path.
fn operation_id(verb: &str, path: &str) -> String {
    let mut out = verb.to_string();
    if path.ends_with('/') {
        out.push_str("Index");
    }
    for part in path
        .split(['/', '_', '{', '}', '.'])
        .filter(|p| !p.is_empty())
    {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

/// One operation object.
fn operation(
    id: String,
    tag: &str,
    summary: String,
    permission: &str,
    params: Vec<Json>,
    contract: Contract,
) -> Json {
    let status = contract.status;
    let mut responses = json!({
        status: {"description": "Success"},
        "400": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
        "413": {"$ref": "#/components/responses/Error"},
    });
    if let Some(schema) = contract.response {
        responses[contract.status]["content"] = json!({"application/json": {"schema": schema}});
    }
    for (code, why) in contract.errors {
        responses[code] = json!({"description": why,
            "content": {"application/json": {"schema": schema_ref("Error")}}});
    }
    let mut o = json!({
        "operationId": id,
        "tags": [tag],
        "summary": summary,
        "description": format!("Permission: {permission}"),
        "x-permission": permission,
        "responses": responses,
    });
    if permission == "none" {
        o["security"] = json!([]);
    } else {
        o["responses"]["401"] = json!({"$ref": "#/components/responses/Error"});
        o["responses"]["403"] = json!({"$ref": "#/components/responses/Error"});
    }
    if id == "postAuthLogin" {
        o["responses"]["401"] = json!({"$ref": "#/components/responses/Error"});
        o["responses"]["429"] = json!({"$ref": "#/components/responses/Error"});
    }
    let params: Vec<Json> = params.into_iter().chain(contract.query).collect();
    if !params.is_empty() {
        o["parameters"] = Json::Array(params);
    }
    if let Some(b) = contract.body {
        o["requestBody"] = json!({"required": contract.body_required,
                                  "content": {"application/json": {"schema": b}}});
    }
    o
}

/// The document for a catalogue.
pub(crate) fn build(cat: &Catalogue) -> Json {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "title": "Error", "required": ["status", "message"], "properties": {
            "status": {"type": "string", "enum": ["error", "validation-error"]},
            "message": {"type": "string"},
            "data": {"nullable": true},
            "validation_errors": {"type": "object", "nullable": true, "additionalProperties": {"type": "string"}}}}),
    );
    for (name, schema) in action_schemas(cat) {
        schemas.insert(name.into(), schema);
    }
    for t in cat.tables() {
        schemas.insert(t.name.clone(), table_schema(t, Shape::Read));
        schemas.insert(format!("{}_create", t.name), table_schema(t, Shape::Create));
        schemas.insert(format!("{}_update", t.name), table_schema(t, Shape::Update));
        let obj = schema_ref(&t.name);
        let list = object_schema(
            &["num_results", "page", "total_pages", "objects"],
            json!({"num_results": {"type": "integer"}, "page": {"type": "integer"},
                   "total_pages": {"type": "integer"}, "objects": {"type": "array", "items": obj}}),
        );
        let id = t
            .id_param
            .clone()
            .unwrap_or_else(|| t.primary_key().name.clone());
        let pk = t.primary_key();
        let id_schema = match pk.ty {
            ColumnType::Int => json!({"type": "integer", "format": "int64"}),
            _ => {
                let mut s = json!({"type": "string", "minLength": 1});
                if let Some(m) = pk.max_len {
                    s["maxLength"] = json!(m);
                }
                s
            }
        };
        let id_param = json!({"name": id, "in": "path", "required": true, "schema": id_schema});
        for path in &t.paths {
            let item_path = format!("{path}/{{{id}}}");
            let tag = &t.name;
            let mut coll = Map::new();
            let mut item = Map::new();
            if let Some(p) = t.methods.get {
                let mut q = vec![q_param()];
                q.extend(paging_params());
                let c = Contract::new("200", Some(list.clone())).query(q);
                coll.insert(
                    "get".into(),
                    operation(
                        operation_id("list", path),
                        tag,
                        format!("List {} (q, page, results_per_page)", t.name),
                        p.as_str(),
                        vec![],
                        c,
                    ),
                );
                let c = Contract::new("200", Some(obj.clone()));
                item.insert(
                    "get".into(),
                    operation(
                        operation_id("get", &item_path),
                        tag,
                        format!("Get one {}", t.name),
                        p.as_str(),
                        vec![id_param.clone()],
                        c,
                    ),
                );
            }
            if let Some(p) = t.methods.post {
                let c = Contract::new("201", Some(obj.clone()))
                    .body(schema_ref(&format!("{}_create", t.name)));
                coll.insert(
                    "post".into(),
                    operation(
                        operation_id("create", path),
                        tag,
                        format!("Create a {}", t.name),
                        p.as_str(),
                        vec![],
                        c,
                    ),
                );
            }
            if let Some(p) = t.methods.put {
                let c = Contract::new("200", Some(obj.clone()))
                    .body(schema_ref(&format!("{}_update", t.name)));
                item.insert(
                    "put".into(),
                    operation(
                        operation_id("update", &item_path),
                        tag,
                        format!("Change a {}", t.name),
                        p.as_str(),
                        vec![id_param.clone()],
                        c,
                    ),
                );
            }
            if let Some(p) = t.methods.delete {
                item.insert(
                    "delete".into(),
                    operation(
                        operation_id("delete", &item_path),
                        tag,
                        format!("Delete a {}", t.name),
                        p.as_str(),
                        vec![id_param.clone()],
                        Contract::new("204", None),
                    ),
                );
            }
            paths.insert(format!("/v1{path}"), Json::Object(coll));
            paths.insert(format!("/v1{item_path}"), Json::Object(item));
        }
    }
    for (path, method, summary, permission) in ACTION_ROUTES {
        // Probes and the console live outside the versioned API.
        let full = if matches!(*path, "/health" | "/ready") || path.starts_with("/console") {
            (*path).to_string()
        } else {
            format!("/v1{path}")
        };
        let tag = path
            .split('/')
            .find(|s| !s.is_empty())
            .unwrap_or("api")
            .trim_end_matches(".json");
        let o = operation(
            operation_id(method, path),
            tag,
            (*summary).to_string(),
            permission,
            path_params(cat, path),
            action_contract(cat, method, path),
        );
        let entry = paths.entry(full).or_insert_with(|| json!({}));
        entry[*method] = o;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "SMARTSolar API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The relational API of SMARTSolar. Log in with `POST /v1/auth/login`, then send \
                                 `Authorization: Token token=<API_token>` with every call. Each operation's description \
                                 names the permission level it needs (`x-permission`)."},
        "servers": [{"url": "/"}],
        "security": [{"ApiToken": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"ApiToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token token=<API_token>`, the token from /v1/auth/login"}},
            "responses": {"Error": {"description": "The error envelope; validation errors name each field",
                "content": {"application/json": {"schema": schema_ref("Error")}}}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `control-plane/docs-ui/` is embedded, so a file
    /// added by `scripts/vendor-console.sh` cannot be left out.
    #[test]
    fn every_reference_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs-ui");
        let mut stack = vec![root.clone()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path.strip_prefix(&root).unwrap().to_string_lossy();
                assert!(DOCS.find(&rel).is_some(), "{rel} is not in DOCS_ASSETS");
                seen += 1;
            }
        }
        assert_eq!(seen, DOCS_ASSETS.len());
    }

    /// Whether a schema says what its value is: a type, a reference, a
    /// choice, an enum, or null (`nullable` with nothing else to be).
    fn is_typed(schema: &Json) -> bool {
        ["type", "$ref", "oneOf", "anyOf", "allOf", "enum"]
            .iter()
            .any(|k| schema.get(k).is_some())
            || (schema["nullable"] == json!(true) && schema["description"].is_string())
    }

    /// A request body schema that names its fields (or its variants), not
    /// just "some object".
    fn describes_fields(schema: &Json) -> bool {
        let named = |key: &str| {
            schema
                .get(key)
                .is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty()) || v.is_array())
        };
        schema.get("$ref").is_some()
            || named("oneOf")
            || named("properties")
            || schema["additionalProperties"].is_object()
    }

    /// The crate's source files but this one (whose text names routes in
    /// its tests), with their text.
    fn source_files() -> Vec<(std::path::PathBuf, String)> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if !path.ends_with("http/openapi.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    files.push((path, text));
                }
            }
        }
        files
    }

    /// A path without `/v1` and with every parameter written `{}`, so the
    /// router's names (`{id}`, `{*path}`) match the document's.
    fn normalise(path: &str) -> String {
        let path = path.strip_prefix("/v1").unwrap_or(path);
        let mut out = String::new();
        let mut depth = 0;
        for c in path.chars() {
            match c {
                '{' => {
                    depth += 1;
                    if depth == 1 {
                        out.push_str("{}");
                    }
                }
                '}' => depth -= 1,
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    }

    /// The `.route("…", …)` calls with a literal path in `text`: the path
    /// and the call's text up to its closing parenthesis.
    fn routes_in(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + 7..];
            let Some(literal) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            let route = literal[..literal.find('"').unwrap()].to_string();
            let mut depth = 1;
            let call: String = rest
                .chars()
                .take_while(|c| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth > 0
                })
                .collect();
            out.push((route, call));
        }
        out
    }

    /// The (method, route) pairs whose handler reads a body (`JsonBody`,
    /// `GetArgs`): `post(name)` in a route call, then `fn name` in the
    /// router's own file first (a service function elsewhere may share its
    /// name), then anywhere.
    fn handlers_reading_a_body() -> Vec<(String, String)> {
        let files = source_files();
        let body_of = |name: &str, home: &str| -> Option<String> {
            let needle = format!("fn {name}(");
            std::iter::once(home)
                .chain(files.iter().map(|(_, t)| t.as_str()))
                .find_map(|text| {
                    let at = text.find(&needle)?;
                    let end = text[at..].find("\n}\n").map_or(text.len(), |e| at + e);
                    Some(text[at..end].to_string())
                })
        };
        let mut out = Vec::new();
        for (_, text) in &files {
            for (route, call) in routes_in(text) {
                for method in ["post", "put", "delete", "patch"] {
                    let needle = format!("{method}(");
                    let mut rest = call.as_str();
                    while let Some(m) = rest.find(&needle) {
                        let before = rest[..m].chars().last();
                        rest = &rest[m + needle.len()..];
                        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                            continue;
                        }
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                            .collect();
                        let name = name.rsplit("::").next().unwrap_or_default();
                        if body_of(name, text)
                            .is_some_and(|f| f.contains("JsonBody") || f.contains("GetArgs"))
                        {
                            out.push((method.to_string(), route.clone()));
                        }
                    }
                }
            }
        }
        out
    }

    /// Every operation states its success answer with a schema, the
    /// envelope's `data` included (or is one of the few that answer with a
    /// page, a file or nothing), every body it takes names its fields, and
    /// every handler that reads a body has one documented.
    #[test]
    fn every_operation_is_typed() {
        let doc = build(&Catalogue::builtin());
        // HTML, files, plain text, and 204 No Content.
        let not_json = |path: &str, method: &str| {
            path.starts_with("/console")
                || path.starts_with("/v1/docs")
                || matches!(path, "/v1/home" | "/health" | "/ready")
                || method == "delete"
        };
        let mut faults = Vec::new();
        let mut with_body = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let what = format!("{method} {path}");
                let success: Vec<&Json> = op["responses"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(code, _)| code.starts_with('2'))
                    .map(|(_, r)| r)
                    .collect();
                if success.is_empty() {
                    faults.push(format!("{what}: no success response"));
                }
                if !not_json(path, method) {
                    for r in &success {
                        let schema = &r["content"]["application/json"]["schema"];
                        if !is_typed(schema) {
                            faults.push(format!("{what}: success response without a schema"));
                        }
                        // The envelope's `data` says what it holds, too.
                        if let Some(data) = schema["properties"].get("data") {
                            if !is_typed(data) {
                                faults.push(format!("{what}: `data` without a schema"));
                            }
                        }
                    }
                }
                for (code, r) in op["responses"].as_object().unwrap() {
                    if !code.starts_with('2') && r.get("$ref").is_none() {
                        let schema = &r["content"]["application/json"]["schema"];
                        if !is_typed(schema) {
                            faults.push(format!("{what}: {code} without a schema"));
                        }
                    }
                }
                if let Some(body) = op.get("requestBody") {
                    let schema = &body["content"]["application/json"]["schema"];
                    if !describes_fields(schema) {
                        faults.push(format!("{what}: a body schema that names no field"));
                    }
                    with_body.push((method.clone(), path.clone()));
                }
            }
        }
        let documented: Vec<(String, String)> = with_body
            .iter()
            .map(|(m, p)| (m.clone(), normalise(p)))
            .collect();
        let reading = handlers_reading_a_body();
        assert!(reading.len() > 20, "the source scan found only {reading:?}");
        for (method, route) in reading {
            if !documented.contains(&(method.clone(), normalise(&route))) {
                faults.push(format!(
                    "{method} {route}: the handler reads a body the document does not describe"
                ));
            }
        }
        assert!(faults.is_empty(), "{}", faults.join("\n"));
    }

    /// `value`'s object keys, at every depth, are the properties `schema`
    /// states (references resolved in `doc`), and the required ones are
    /// there.
    fn same_fields(doc: &Json, schema: &Json, value: &Json, at: &str) -> Vec<String> {
        let schema = match schema["$ref"].as_str() {
            Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
            None => match schema["allOf"].get(0) {
                Some(inner) => return same_fields(doc, inner, value, at),
                None => schema,
            },
        };
        let mut faults = Vec::new();
        match value {
            Json::Object(o) => {
                if let Some(props) = schema["properties"].as_object() {
                    for k in o.keys() {
                        match props.get(k) {
                            Some(p) => {
                                faults.extend(same_fields(doc, p, &o[k], &format!("{at}.{k}")))
                            }
                            None => faults.push(format!("{at}.{k}: sent, not documented")),
                        }
                    }
                    for k in props.keys().filter(|k| !o.contains_key(*k)) {
                        faults.push(format!("{at}.{k}: documented, not sent"));
                    }
                } else if schema["additionalProperties"].is_object() {
                    for (k, v) in o {
                        faults.extend(same_fields(
                            doc,
                            &schema["additionalProperties"],
                            v,
                            &format!("{at}.{k}"),
                        ));
                    }
                }
                for r in schema["required"].as_array().into_iter().flatten() {
                    if !o.contains_key(r.as_str().unwrap()) {
                        faults.push(format!("{at}.{r}: required, not sent"));
                    }
                }
            }
            Json::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    faults.extend(same_fields(doc, &schema["items"], v, &format!("{at}[{i}]")));
                }
            }
            _ => {}
        }
        faults
    }

    /// The handlers that build their `data` from a struct answer with the
    /// fields the document states for them, no more and no fewer.
    #[test]
    fn typed_data_has_the_documented_fields() {
        let doc = build(&Catalogue::builtin());
        let data = |path: &str| {
            doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
                ["properties"]["data"]
                .clone()
        };
        let examples = [
            (
                "/v1/products/{product_imei}/balance_and_pending_payments",
                serde_json::to_value(super::super::dcm::BalanceAndPending::example()).unwrap(),
            ),
            (
                "/v1/current_enable_status",
                json!([crate::actions::dashboard::EnableStatus::example()]),
            ),
        ];
        for (path, value) in examples {
            let faults = same_fields(&doc, &data(path), &value, path);
            assert!(faults.is_empty(), "{}", faults.join("\n"));
        }
        // Not blind: a field the document lacks is found.
        let mut extra =
            serde_json::to_value(super::super::dcm::BalanceAndPending::example()).unwrap();
        extra["pending_payment_commands"][0]["transaction_id"] = json!("t");
        let path = "/v1/products/{product_imei}/balance_and_pending_payments";
        assert_eq!(
            same_fields(&doc, &data(path), &extra, "b"),
            ["b.pending_payment_commands[0].transaction_id: sent, not documented"]
        );
    }

    /// Rows document their timestamps as the server writes them, and
    /// request bodies as it reads them (RFC 3339 among other forms).
    #[test]
    fn timestamps_are_documented_as_written_and_as_read() {
        let doc = build(&Catalogue::builtin());
        let schemas = &doc["components"]["schemas"];
        let row = &schemas["enable_history"]["properties"]["date"];
        assert_eq!(row["pattern"], json!(DATETIME_PATTERN), "{row}");
        assert!(row.get("format").is_none(), "{row}");
        let written = regex::Regex::new(DATETIME_PATTERN).unwrap();
        assert!(written.is_match(row["example"].as_str().unwrap()));
        let nullable = &schemas["product"]["properties"]["disable_date"];
        assert_eq!(nullable["nullable"], json!(true), "{nullable}");
        assert_eq!(nullable["pattern"], json!(DATETIME_PATTERN), "{nullable}");
        let body = &schemas["product_update"]["properties"]["disable_date"];
        assert_eq!(body["format"], json!("date-time"), "{body}");
        assert!(body.get("pattern").is_none(), "{body}");
    }

    /// Every path a router in this crate registers (found in the source)
    /// appears in the document, so new endpoints cannot be forgotten.
    #[test]
    fn every_route_in_the_source_is_documented() {
        let doc = build(&Catalogue::builtin());
        let documented: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|p| normalise(p.as_str()))
            .collect();
        let mut missing = Vec::new();
        for (path, text) in source_files() {
            for (route, _) in routes_in(&text) {
                if !documented.contains(&normalise(&route)) {
                    missing.push(format!("{route} ({})", path.display()));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "routes missing from ACTION_ROUTES in http/openapi.rs: {missing:?}"
        );
    }
}
