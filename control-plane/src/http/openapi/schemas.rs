//! Schemas of the OpenAPI document: catalogue columns and tables, the
//! success envelope, path and query parameters.

use serde_json::{json, Map, Value as Json};

use crate::actions::manufacturing::ProductKind;
use crate::catalogue::{Catalogue, Column, ColumnType, Table};
use crate::values::DATETIME_PATTERN;

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
pub(super) enum Shape {
    Read,
    Create,
    Update,
}

/// The schema of a table's rows (`Read`) or of a write body. Write bodies
/// follow `generic::validate_body`: unknown fields are refused, columns the
/// server sets (meta data, integer ids; the key on PUT) are ignored
/// whatever they hold, and on POST the not-null columns without a default
/// are required.
pub(super) fn table_schema(table: &Table, shape: Shape) -> Json {
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
                    && !super::super::natural_keys::assigned(table, c)
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

pub(super) fn schema_ref(name: &str) -> Json {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `{"status": "success", "message", "data": <data>}` (`web::success`).
pub(super) fn envelope(data: Json) -> Json {
    json!({"type": "object", "required": ["status", "message", "data"], "properties": {
        "status": {"type": "string", "enum": ["success"]},
        "message": {},
        "data": data,
    }})
}

/// The schema of a path parameter, by its name: the type the handler
/// parses it as and the catalogue column it names.
pub(super) fn path_param_schema(cat: &Catalogue, name: &str) -> Json {
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

pub(super) fn path_params(cat: &Catalogue, path: &str) -> Vec<Json> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true,
                   "schema": path_param_schema(cat, name)})
        })
        .collect()
}

pub(super) fn query_param(name: &str, schema: Json, required: bool, description: &str) -> Json {
    let mut p = json!({"name": name, "in": "query", "required": required, "schema": schema});
    if !description.is_empty() {
        p["description"] = json!(description);
    }
    p
}

pub(super) fn paging_params() -> Vec<Json> {
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

pub(super) fn q_param() -> Json {
    query_param(
        "q",
        json!({"type": "string"}),
        false,
        "JSON query: filters ([{name, op, val}]), limit, offset, order_by, group_by, single; \
         e.g. {\"filters\":[{\"name\":\"name\",\"op\":\"like\",\"val\":\"%enable%\"}]}",
    )
}

/// The documented inputs and output of one operation.
pub(super) struct Contract {
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
    pub(super) fn new(status: &'static str, response: Option<Json>) -> Self {
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
    pub(super) fn error(mut self, status: &'static str, why: &'static str) -> Self {
        self.errors.push((status, why));
        self
    }
    pub(super) fn body(mut self, schema: Json) -> Self {
        self.body = Some(schema);
        self
    }
    /// A body the handler reads when there is one (an empty body is `{}`).
    pub(super) fn optional_body(mut self, schema: Json) -> Self {
        self.body = Some(schema);
        self.body_required = false;
        self
    }
    pub(super) fn query(mut self, params: Vec<Json>) -> Self {
        self.query = params;
        self
    }
}

pub(super) fn object_schema(required: &[&str], properties: Json) -> Json {
    let mut s = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    s
}

/// One operation object.
pub(super) fn operation(
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
