//! `GET /v1/openapi.json`: an OpenAPI 3 document generated from the catalogue
//! and the list of action routes (the original API had none).

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value as Json};

use super::AppState;
use crate::catalogue::{Catalogue, ColumnType, Table};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(document))
}

async fn document(State(state): State<AppState>) -> axum::Json<Json> {
    axum::Json(build(&state.catalogue))
}

/// Routes that are not generic table routes: (path, method, summary, permission).
pub(crate) const ACTION_ROUTES: &[(&str, &str, &str, &str)] = &[
    (
        "/auth/login",
        "post",
        "Log in with username and password (form or JSON); returns an API token",
        "none",
    ),
    (
        "/auth/validate_user",
        "get",
        "Check whether a username exists",
        "SYSTEM",
    ),
    (
        "/auth/validate_user_and_password",
        "get",
        "Check a username/password pair",
        "SYSTEM",
    ),
    (
        "/home",
        "get",
        "Welcome text with the server time (no auth)",
        "none",
    ),
    ("/openapi.json", "get", "This document", "none"),
    (
        "/whoami",
        "get",
        "The caller's username, permissions, visibility and entity",
        "OVERVIEW",
    ),
    (
        "/console",
        "get",
        "The operator console (HTML page; outside /v1)",
        "none",
    ),
    (
        "/console/",
        "get",
        "The operator console (HTML page; outside /v1)",
        "none",
    ),
    (
        "/console/config.json",
        "get",
        "The console's settings: map tile template and the level each action route needs (outside /v1)",
        "none",
    ),
    (
        "/console/{path}",
        "get",
        "A console file embedded in the binary, with its content type and ETag (outside /v1)",
        "none",
    ),
    (
        "/products/{product_imei}/data",
        "get",
        "Read a unit's time series: start, end, fields, measurement, limit, where, tags, ds_interval, ds_function (query string or JSON body)",
        "OVERVIEW",
    ),
    (
        "/products/{product_imei}/data",
        "post",
        "Write a unit's time series: {measurement, tags, fields: {name: [[time, value], ...]}}",
        "TECHNICAL",
    ),
    (
        "/upload_tool_log",
        "post",
        "Upload a manufacturing or repair tool's log entry (answers 201)",
        "SYSTEM",
    ),
    (
        "/rtc_import_mo_dead_letters",
        "post",
        "Import the letters waiting on the MO dead-letter topic into rtc_dead_letter (needs GLOBAL visibility)",
        "TECHNICAL",
    ),
    (
        "/rtc_import_mt_reply_dead_letters",
        "post",
        "Import the letters waiting on the MT reply dead-letter topic into rtc_dead_letter (needs GLOBAL visibility)",
        "TECHNICAL",
    ),
    (
        "/rtc_dead_letters/{rtc_dead_letter_id}/replay",
        "put",
        "Re-publish a dead letter onto its original topic (needs GLOBAL visibility)",
        "TECHNICAL",
    ),
    (
        "/rtc_dead_letters/{rtc_dead_letter_id}/discard",
        "put",
        "Mark a dead letter as discarded (needs GLOBAL visibility)",
        "TECHNICAL",
    ),
    (
        "/rtc_dead_letters/{rtc_dead_letter_id}/decode",
        "get",
        "A dead letter's CBOR message in readable form",
        "OVERVIEW",
    ),
    (
        "/parts/create_tiger_pcb",
        "post",
        "Create a Tiger PCB part and its SIM part",
        "FACTORY",
    ),
    (
        "/parts/create_hyena_pcb",
        "post",
        "Create a Hyena PCB part and its SIM part",
        "FACTORY",
    ),
    (
        "/parts/create_koala_pcb",
        "post",
        "Create a Koala PCB part and its SIM part",
        "FACTORY",
    ),
    (
        "/parts/create_jackal_pcb",
        "post",
        "Create a Jackal PCB part and its SIM part",
        "FACTORY",
    ),
    (
        "/products/create_product/{product_kind}",
        "post",
        "Create a home2, home3, hub2 or enterprise product from an existing PCB",
        "FACTORY",
    ),
    (
        "/products/create_hub2",
        "post",
        "Create a Hyena PCB and a Hub 2 product in one transaction",
        "FACTORY",
    ),
    (
        "/products/create_enterprise",
        "post",
        "Create a Hyena PCB and an Enterprise product in one transaction",
        "FACTORY",
    ),
    (
        "/products/locations",
        "get",
        "Latest location of every visible product (paged, default 1000)",
        "OVERVIEW",
    ),
    (
        "/products/{product_imei}/enable",
        "put",
        "Enable a unit (pending until the unit confirms)",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/disable",
        "put",
        "Disable a unit (pending until the unit confirms)",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/enable_tamper_switch",
        "put",
        "Enable the tamper switch (pending)",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/disable_tamper_switch",
        "put",
        "Disable the tamper switch (pending)",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/send_wakeup",
        "post",
        "Send a WAKEUP SMS; returns the sms_history row",
        "ADMIN",
    ),
    (
        "/products/{product_imei}/update_software",
        "put",
        "Queue a software update, honouring the lock",
        "SYSTEM",
    ),
    (
        "/products/{product_imei}/lock_software",
        "put",
        "Lock the unit's software (blank payload unlocks)",
        "SYSTEM",
    ),
    (
        "/products/{product_imei}/expire_software_updates",
        "put",
        "Expire pending software updates",
        "SYSTEM",
    ),
    (
        "/products/{product_imei}/assign_entity",
        "put",
        "Link the unit to an entity",
        "ADMIN",
    ),
    (
        "/products/{product_imei}/change_entity",
        "put",
        "Move the unit from one entity to another",
        "ADMIN",
    ),
    (
        "/products/{product_imei}/remove_entity",
        "put",
        "Unlink the unit from an entity",
        "ADMIN",
    ),
    (
        "/products/{product_imei}/change_state",
        "put",
        "Change the lifecycle state (transition table enforced)",
        "ADMIN",
    ),
    (
        "/products/{product_imei}/parts",
        "get",
        "Current and historic parts of the unit",
        "OVERVIEW",
    ),
    (
        "/products/{product_imei}/parameters/history",
        "get",
        "Full parameter history, or the active set at a date",
        "OVERVIEW",
    ),
    (
        "/products/{product_imei}/connectivity_reliability_rate",
        "get",
        "Share of expected 4-hourly connections made between start and end",
        "OVERVIEW",
    ),
    (
        "/products/{product_imei}/available_networks",
        "get",
        "Networks the unit's SIM may use (?mcc=)",
        "OVERVIEW",
    ),
    (
        "/products/{product_imei}/suggest_energy_limit",
        "put",
        "Suggest an energy limit within the allowed bounds",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/set_dcm_enabled_flag",
        "put",
        "Set the DCM flag (immutable for BP20 units)",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/set_is_payg",
        "put",
        "Set the pay-as-you-go flag",
        "TECHNICAL",
    ),
    (
        "/dashboard2",
        "get",
        "Fleet dashboard rows with q filtering and the entities filter",
        "OVERVIEW",
    ),
    (
        "/current_enable_status",
        "get",
        "Enable status of every unit for the ERP sync (page, results_per_page)",
        "FACTORY",
    ),
    (
        "/alerts/{alert_id}/dismiss",
        "put",
        "Dismiss an alert (publishes to product-alert)",
        "TECHNICAL",
    ),
    (
        "/sms/delivery_receipt",
        "post",
        "SMS provider delivery receipt: marks the sms_history row Delivered",
        "SYSTEM",
    ),
    (
        "/products/{product_imei}/add_payment_command",
        "post",
        "Add a payment, bad-payment or zero-command (201)",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/force_reset",
        "post",
        "Void earlier commands and zero the balance (201)",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/balance_and_pending_payments",
        "get",
        "Latest balance and the commands not yet acknowledged",
        "OVERVIEW",
    ),
    (
        "/channels/{name}/subscribe",
        "post",
        "Subscribe a URL to a webhook channel; returns the secret key once (201)",
        "ADMIN",
    ),
    (
        "/channels/{name}/unsubscribe",
        "post",
        "Remove a channel subscription",
        "ADMIN",
    ),
    (
        "/subscribers/{subscriber_id}/deliveries",
        "get",
        "A subscriber's deliveries with every attempt",
        "ADMIN",
    ),
    (
        "/subscribers/{subscriber_id}/deliveries/{delivery_id}/resend",
        "post",
        "Queue a delivery again",
        "ADMIN",
    ),
    (
        "/products/{product_imei}/get_repair",
        "get",
        "The unit's current repair workflow, created on the first call",
        "TECHNICAL",
    ),
    (
        "/repairs/{repair_id}/current_state",
        "get",
        "Current state of a repair: ident, name, description, inputs, events",
        "OVERVIEW",
    ),
    (
        "/repairs/{repair_id}/send_inputs",
        "put",
        "Send input values for the current state",
        "TECHNICAL",
    ),
    (
        "/repairs/{repair_id}/send_events",
        "put",
        "Send an event of the current state",
        "TECHNICAL",
    ),
    (
        "/repairs/{repair_id}/history",
        "get",
        "Steps taken in a repair",
        "OVERVIEW",
    ),
    (
        "/repairs/{repair_id}/undo",
        "put",
        "Undo the latest step of a repair",
        "TECHNICAL",
    ),
    (
        "/repairs/list_current_states",
        "get",
        "Current states of open repairs (entity_id, username, repair_state)",
        "OVERVIEW",
    ),
    (
        "/health",
        "get",
        "Liveness (outside /v1)",
        "none",
    ),
    (
        "/ready",
        "get",
        "Readiness: the database answers (outside /v1)",
        "none",
    ),
    (
        "/products/{product_imei}/command_request",
        "post",
        "Send a debug/diagnostic (AT) command to an RTC unit: {command}",
        "ADMIN",
    ),
    (
        "/products/{product_imei}/sync",
        "post",
        "Ask an RTC unit for its status, telemetry and cell report now",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/status_update",
        "post",
        "Send an RTC unit its desired enable/tamper state, energy limit and parameters",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/rtc_online_status",
        "post",
        "Set an RTC unit's online status by hand: {status: online|offline} (reason user-request)",
        "TECHNICAL",
    ),
    (
        "/products/{product_imei}/force_connection",
        "post",
        "Make a unit connect: a sync for RTC units, a WAKEUP SMS for others",
        "ADMIN",
    ),
];

fn schema_for(table: &Table, writable: bool) -> Json {
    let mut props = Map::new();
    for c in &table.columns {
        if c.is_write_only() && !writable {
            continue;
        }
        if writable && c.is_system() {
            continue;
        }
        let (ty, format) = match c.ty {
            ColumnType::Int => ("integer", None),
            ColumnType::Float => ("number", None),
            ColumnType::Boolean => ("boolean", None),
            ColumnType::Datetime => ("string", Some("date-time")),
            ColumnType::Date => ("string", Some("date")),
            ColumnType::Array => ("array", None),
            ColumnType::String | ColumnType::Text => ("string", None),
        };
        let mut p = json!({"type": ty, "nullable": !c.not_null});
        if let Some(f) = format {
            p["format"] = json!(f);
        }
        if let Some(o) = &c.options {
            p["enum"] = json!(o);
        }
        if let Some(m) = c.max_len {
            p["maxLength"] = json!(m);
        }
        if !c.description.is_empty() {
            p["description"] = json!(c.description);
        }
        props.insert(c.name.clone(), p);
    }
    let required: Vec<&str> = table
        .columns
        .iter()
        .filter(|c| {
            writable
                && c.not_null
                && c.default.is_none()
                && !c.is_system()
                && !super::natural_keys::assigned(table, c)
        })
        .map(|c| c.name.as_str())
        .collect();
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn op(
    summary: String,
    permission: &str,
    status: &str,
    body: Option<Json>,
    response: Option<Json>,
) -> Json {
    let mut o = json!({
        "summary": summary,
        "description": format!("Permission: {permission}"),
        "responses": {status: {"description": "success"}, "400": {"$ref": "#/components/responses/Error"},
                      "401": {"$ref": "#/components/responses/Error"}, "403": {"$ref": "#/components/responses/Error"}},
    });
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    if let Some(r) = response {
        o["responses"][status]["content"] = json!({"application/json": {"schema": r}});
    }
    o
}

/// The document for a catalogue.
pub(crate) fn build(cat: &Catalogue) -> Json {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for t in cat.tables() {
        schemas.insert(t.name.clone(), schema_for(t, false));
        schemas.insert(format!("{}_write", t.name), schema_for(t, true));
        let obj = json!({"$ref": format!("#/components/schemas/{}", t.name)});
        let write = json!({"$ref": format!("#/components/schemas/{}_write", t.name)});
        let list = json!({"type": "object", "properties": {"num_results": {"type": "integer"}, "page": {"type": "integer"},
                          "total_pages": {"type": "integer"}, "objects": {"type": "array", "items": obj}}});
        let id = t
            .id_param
            .clone()
            .unwrap_or_else(|| t.primary_key().name.clone());
        for path in &t.paths {
            let mut coll = Map::new();
            if let Some(p) = t.methods.get {
                let mut o = op(
                    format!("List {} (q, page, results_per_page)", t.name),
                    p.as_str(),
                    "200",
                    None,
                    Some(list.clone()),
                );
                o["parameters"] = json!([
                    {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "JSON query: filters, limit, offset, order_by, group_by, single"},
                    {"name": "page", "in": "query", "schema": {"type": "integer"}},
                    {"name": "results_per_page", "in": "query", "schema": {"type": "integer"}}]);
                coll.insert("get".into(), o);
            }
            if let Some(p) = t.methods.post {
                coll.insert(
                    "post".into(),
                    op(
                        format!("Create a {}", t.name),
                        p.as_str(),
                        "201",
                        Some(write.clone()),
                        Some(obj.clone()),
                    ),
                );
            }
            let mut item = Map::new();
            if let Some(p) = t.methods.get {
                item.insert(
                    "get".into(),
                    op(
                        format!("Get one {}", t.name),
                        p.as_str(),
                        "200",
                        None,
                        Some(obj.clone()),
                    ),
                );
            }
            if let Some(p) = t.methods.put {
                item.insert(
                    "put".into(),
                    op(
                        format!("Change a {}", t.name),
                        p.as_str(),
                        "200",
                        Some(write.clone()),
                        Some(obj.clone()),
                    ),
                );
            }
            if let Some(p) = t.methods.delete {
                item.insert(
                    "delete".into(),
                    op(
                        format!("Delete a {}", t.name),
                        p.as_str(),
                        "204",
                        None,
                        None,
                    ),
                );
            }
            item.insert(
                "parameters".into(),
                json!([{"name": id, "in": "path", "required": true, "schema": {"type": "string"}}]),
            );
            paths.insert(format!("/v1{path}"), Json::Object(coll));
            paths.insert(format!("/v1{path}/{{{id}}}"), Json::Object(item));
        }
    }
    for (path, method, summary, permission) in ACTION_ROUTES {
        // Probes and the console live outside the versioned API.
        let full = if matches!(*path, "/health" | "/ready") || path.starts_with("/console") {
            (*path).to_string()
        } else {
            format!("/v1{path}")
        };
        let entry = paths.entry(full).or_insert_with(|| json!({}));
        entry[*method] = op((*summary).to_string(), permission, "200", None, None);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "SMARTSolar API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Authenticate with `Authorization: Token token=<API_token>` from /v1/auth/login."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": {"description": "error envelope", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"status": {"type": "string"}, "message": {}, "data": {}, "validation_errors": {}}}}}}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path a router in this crate registers (found in the source)
    /// appears in the document, so new endpoints cannot be forgotten.
    #[test]
    fn every_route_in_the_source_is_documented() {
        let doc = build(&Catalogue::builtin());
        let normalise = |p: &str| {
            let mut out = String::new();
            let mut depth = 0;
            for c in p.chars() {
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
        };
        let documented: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|p| normalise(p.strip_prefix("/v1").unwrap_or(p)))
            .collect();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut missing = Vec::new();
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.ends_with("http/openapi.rs") {
                    continue; // this test's own text
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let mut rest = text.as_str();
                while let Some(at) = rest.find(".route(") {
                    rest = &rest[at + 7..];
                    let trimmed = rest.trim_start();
                    let Some(literal) = trimmed.strip_prefix('"') else {
                        continue;
                    };
                    let route = &literal[..literal.find('"').unwrap()];
                    if !documented.contains(&normalise(route)) {
                        missing.push(format!("{route} ({})", path.display()));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "routes missing from ACTION_ROUTES in http/openapi.rs: {missing:?}"
        );
    }
}
