//! The contracts of the action routes: the request and response each
//! handler documents, next to the constants of the handlers they describe.

use serde_json::{json, Map, Value as Json};

use super::schemas::*;
use super::PERMISSIONS;
use crate::actions::manufacturing::{
    ProductKind, HYENA_PCB_PART_TYPE, MAX_BATTERY_SERIAL, PCB_IMEI, PCB_ROUTES, PCB_TEXT_FIELDS,
    PRODUCT_FIELDS, SIM_PART_TYPE,
};
use crate::catalogue::Catalogue;
use crate::data::time::{MAX_ABS_MS, YEARS_PATTERN};
use crate::data::tool_log::PERMITTED;
use crate::dcm::Category;
use axum::http::StatusCode;

/// The request and response of an action route. Constraints here are the
/// ones its handler enforces (`actions::*`, `http::dcm`, ...); the
/// schemathesis run in `tests/openapi.rs` sends data valid and invalid by
/// this document and fails when the server disagrees with it.
pub(super) fn action_contract(cat: &Catalogue, method: &str, path: &str) -> Contract {
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
        "maxLength": super::super::dcm::MAX_TRANSACTION_ID,
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
            ok(super::super::dcm::BalanceAndPending::schema())
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
pub(super) fn null_data(description: &str) -> Json {
    json!({"nullable": true, "description": description})
}

/// An integer field read by `actions::int_field` (a JSON integer; the
/// server also takes a string of digits).
pub(super) fn int_schema(description: &str) -> Json {
    json!({"type": "integer", "format": "int64", "description": description})
}

/// The body of `create_*_pcb`: `manufacturing::PcbRequest::parse`, from its
/// text rules.
pub(super) fn pcb_request_schema(cat: &Catalogue, default_part_type: i64) -> Json {
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
pub(super) fn product_request_fields(
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
pub(super) fn product_request_schema(cat: &Catalogue, kind: Option<ProductKind>) -> Json {
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
pub(super) fn pcb_and_product_schema(cat: &Catalogue, kind: ProductKind) -> Json {
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

pub(super) fn with_description(mut schema: Json, description: &str) -> Json {
    schema["description"] = json!(description);
    schema
}

/// `data` of the PCB routes: the PCB and SIM parts as `part_body` renders them.
pub(super) fn pcb_data_schema() -> Json {
    object_schema(
        &["pcb", "sim"],
        json!({"pcb": schema_ref("created_part"), "sim": schema_ref("created_sim_part")}),
    )
}

/// `data` of the product routes (`manufacturing::product_data`).
pub(super) fn product_data_schema() -> Json {
    object_schema(
        &["product", "pcb"],
        json!({"product": schema_ref("created_product"), "pcb": schema_ref("created_part"),
               "sim": schema_ref("created_sim_part"), "battery": schema_ref("created_part")}),
    )
}

/// A table's row schema with some properties replaced or added, under its
/// own title.
pub(super) fn row_with(cat: &Catalogue, table: &str, title: &str, extra: Json) -> Json {
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
pub(super) fn action_schemas(cat: &Catalogue) -> Vec<(&'static str, Json)> {
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
pub(super) fn tool_log_schema() -> Json {
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
