//! Repair workflows through real HTTP, on SQLite and on PostgreSQL: the
//! whole default workflow, every IRT rule, undo, French, permissions and
//! scope.

mod common;

use common::{link, set_state, Backend, TestServer, ADMIN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value as Json};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_UNIT: AtomicU32 = AtomicU32::new(1);

both_backends!(
    walk_the_whole_default_workflow,
    battery_failure_terminates_the_unit,
    every_irt_rule_is_enforced,
    undo_reverses_transitions_and_their_effects,
    french_labels,
    permissions_and_entity_scope,
    get_repair_needs_in_repair_system_and_a_workflow,
    every_product_type_the_system_creates_can_be_repaired,
);

/// A request with an optional `Accept-Language`.
async fn call(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Json>,
    lang: Option<&str>,
) -> (StatusCode, Json) {
    let mut req = server
        .client
        .request(method, server.url(path))
        .header("Authorization", format!("Token token={token}"));
    if let Some(l) = lang {
        req = req.header("Accept-Language", l);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

/// A BBOXX Home 2 (product type 6) in `state_type` with a Tiger 2 PCB
/// (part type 44) fitted; returns its IMEI.
async fn unit(server: &TestServer, state_type: Option<i64>) -> String {
    let n = NEXT_UNIT.fetch_add(1, Ordering::Relaxed);
    let imei = format!("8648{:03}{n:08}", std::process::id() % 1000);
    server
        .seed(
            "product",
            json!({"product_imei": imei, "product_type_id": 6}),
        )
        .await;
    if let Some(st) = state_type {
        set_state(server, &imei, st).await;
    }
    let part = server.seed("part", json!({"part_type_id": 44})).await;
    server
        .seed(
            "part_product_linker",
            json!({"part_id": part, "product_imei": imei, "date_removed": null,
                   "added_repair_id": null, "removed_repair_id": null, "replaced_part_id": null}),
        )
        .await;
    imei
}

/// Starts a repair of a new unit in IN_REPAIR_SYSTEM; returns (imei, repair id).
async fn repair(server: &TestServer) -> (String, i64) {
    let imei = unit(server, Some(8)).await;
    let b = server
        .get_ok(&format!("/v1/products/{imei}/get_repair"))
        .await;
    (imei, b["data"]["repair_id"].as_i64().unwrap())
}

async fn inputs(server: &TestServer, id: i64, body: Json) -> (StatusCode, Json) {
    server
        .put(&format!("/v1/repairs/{id}/send_inputs"), body)
        .await
}

async fn event(server: &TestServer, id: i64, e: &str) -> (StatusCode, Json) {
    server
        .put(
            &format!("/v1/repairs/{id}/send_events"),
            json!({ "event": e }),
        )
        .await
}

async fn ok_inputs(server: &TestServer, id: i64, body: Json) {
    let (s, b) = inputs(server, id, body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body} -> {b}");
    assert_eq!(
        b,
        json!({"status": "success", "message": "Repair updated", "data": {}})
    );
}

async fn ok_event(server: &TestServer, id: i64, e: &str) {
    let (s, b) = event(server, id, e).await;
    assert_eq!(s, StatusCode::OK, "{e} -> {b}");
}

async fn state_of(server: &TestServer, id: i64) -> String {
    let b = server
        .get_ok(&format!("/v1/repairs/{id}/current_state"))
        .await;
    b["data"]["ident"].as_str().unwrap().to_string()
}

/// All rows of a table matching one filter, through the generic API.
async fn rows(server: &TestServer, path: &str, field: &str, val: Json) -> Vec<Json> {
    server
        .list_objects(
            path,
            json!({"filters": [{"name": field, "op": "eq", "val": val}]}),
        )
        .await
}

const USB_PASS: &str = r#"{"serial": "MC0211-999002-1", "voltage": 6.5, "usb_port_result": "pass", "pcb_result": "pass"}"#;

async fn walk_the_whole_default_workflow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = unit(&server, Some(8)).await;

    // get_repair creates the repair once, with the product type's config.
    let b = server
        .get_ok(&format!("/v1/products/{imei}/get_repair"))
        .await;
    assert_eq!(b["status"], "success");
    assert_eq!(b["message"], "Repair created");
    let id = b["data"]["repair_id"].as_i64().unwrap();
    assert_eq!(
        b["data"]["config"],
        json!({"12v_load_current": 1.0, "usb_load_current": 1.7, "connectivity_timeout": 120,
               "discharge_voltage": 6.0, "final_state_of_charge": 50, "pass_capacity_mah": 8000})
    );
    let again = server
        .get_ok(&format!("/v1/products/{imei}/get_repair"))
        .await;
    assert_eq!(again["message"], "Repair found");
    assert_eq!(again["data"]["repair_id"], json!(id));
    let (_, r) = server.get(&format!("/v1/repairs/{id}")).await;
    assert_eq!(r["workflow_name"], "bboxx_home_2");
    assert_eq!(r["created_by"], ADMIN);

    // SMART SOLAR State Check.
    let b = server
        .get_ok(&format!("/v1/repairs/{id}/current_state"))
        .await;
    assert_eq!(b["message"], "Repair found");
    assert_eq!(b["data"]["ident"], "ss_state_check");
    assert_eq!(b["data"]["name"], "SMART SOLAR State Check");
    assert_eq!(b["data"]["events"], json!([]));
    assert_eq!(
        b["data"]["inputs"][1],
        json!({"data_type": "text", "ident": "customer_complaint", "label": "Customer complaint (optional)",
               "validation_rules": {"maxlength": 2000, "minlength": 10}})
    );
    assert_eq!(b["data"]["inputs"][0]["selection_type"], "single");
    assert_eq!(
        b["data"]["inputs"][0]["options"][0],
        json!({"label": "No power", "value": "no_power"})
    );
    ok_inputs(&server, id, json!({"reported_fault": "no_power"})).await;

    // USB Diagnostic Test: a faulty PCB leads to Replace PCB.
    assert_eq!(state_of(&server, id).await, "usb_diag_test");
    ok_inputs(
        &server,
        id,
        json!({"serial": "MC0211-999002-1", "voltage": 4.8}),
    )
    .await;
    assert_eq!(
        state_of(&server, id).await,
        "usb_diag_test",
        "inputs incomplete"
    );
    ok_inputs(
        &server,
        id,
        json!({"usb_port_result": "pass", "pcb_result": "fail"}),
    )
    .await;

    // Replace PCB: exactly the spec's example body.
    let b = server
        .get_ok(&format!("/v1/repairs/{id}/current_state"))
        .await;
    assert_eq!(
        b,
        json!({
            "status": "success",
            "message": "Repair found",
            "data": {
                "description": "The test jig indicates that this unit has a faulty PCB. Replace the PCB. Click the button below when this has been done",
                "events": [],
                "ident": "replace_pcb",
                "inputs": [{
                    "data_type": "selection",
                    "ident": "replacement_part_type",
                    "label": "Choose one of these replacement PCB's",
                    "options": [
                        {"label": "BBOXX Home 2 PCB (Tiger 7)", "value": 61},
                        {"label": "BBOXX Home 2 PCB (Tiger 2)", "value": 44},
                        {"label": "BBOXX Home 2 PCB (Tiger 6)", "value": 48}
                    ],
                    "selection_type": "single"
                }],
                "name": "Replace PCB"
            }
        })
    );
    ok_inputs(&server, id, json!({"replacement_part_type": 61})).await;

    // The PCB was swapped in part_product_linker and recorded for the repair.
    let links = rows(
        &server,
        "/v1/part_product_linker",
        "product_imei",
        json!(imei),
    )
    .await;
    assert_eq!(links.len(), 2, "{links:?}");
    let old = links
        .iter()
        .find(|l| l["added_repair_id"].is_null())
        .unwrap();
    let new = links
        .iter()
        .find(|l| l["added_repair_id"] == json!(id))
        .unwrap();
    assert_eq!(old["removed_repair_id"], json!(id));
    assert!(old["date_removed"].is_string());
    assert!(new["date_removed"].is_null());
    assert_eq!(new["replaced_part_id"], old["part_id"]);
    let (_, part) = server.get(&format!("/v1/parts/{}", new["part_id"])).await;
    assert_eq!(part["part_type_id"], json!(61));
    let replaced = rows(
        &server,
        "/v1/repair_part_type_linker",
        "repair_id",
        json!(id),
    )
    .await;
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0]["old_part_type_id"], json!(44));
    assert_eq!(replaced[0]["new_part_type_id"], json!(61));
    assert_eq!(replaced[0]["new_part_id"], new["part_id"]);

    // Retest: healthy voltage skips the battery test.
    assert_eq!(state_of(&server, id).await, "usb_diag_test");
    ok_inputs(&server, id, serde_json::from_str(USB_PASS).unwrap()).await;
    assert_eq!(state_of(&server, id).await, "explain_skip_btb");
    ok_event(&server, id, "continue").await;

    // Charge: the event needs the input, then its guard.
    assert_eq!(state_of(&server, id).await, "charge_2");
    let (s, b) = event(&server, id, "battery.charged").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("state_of_charge"),
        "{b}"
    );
    ok_inputs(&server, id, json!({"state_of_charge": 40})).await;
    let (s, b) = event(&server, id, "battery.charged").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        b["message"],
        "Event 'battery.charged' cannot be taken in state 'charge_2': it needs 'state_of_charge' >= 50"
    );
    ok_inputs(&server, id, json!({"state_of_charge": 60})).await;
    ok_event(&server, id, "battery.charged").await;

    // Clean, Visual Inspection, Select Damaged Casing.
    assert_eq!(state_of(&server, id).await, "clean");
    ok_event(&server, id, "cleaned").await;
    assert_eq!(state_of(&server, id).await, "visual_inspection");
    ok_inputs(
        &server,
        id,
        json!({"usb_ports_working": 4, "fuse_rating": 5.0, "casing_condition": "damaged"}),
    )
    .await;
    assert_eq!(state_of(&server, id).await, "select_damaged_casing");
    ok_inputs(&server, id, json!({"damaged_parts": [69, 12]})).await;
    let replaced = rows(
        &server,
        "/v1/repair_part_type_linker",
        "repair_id",
        json!(id),
    )
    .await;
    let mut types: Vec<i64> = replaced
        .iter()
        .map(|r| r["new_part_type_id"].as_i64().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, vec![12, 61, 69]);

    // The list of current repairs shows where it is.
    let b = server.get_ok("/v1/repairs/list_current_states").await;
    assert_eq!(b["message"], "Repair states found");
    assert_eq!(
        b["data"],
        json!([{"created_by": ADMIN, "product_imei": imei, "repair_id": id,
                "repair_state_id": "final_check", "repair_state_name": "Final Check"}])
    );

    // History: every state visited, in order, ending with the current one.
    let b = server.get_ok(&format!("/v1/repairs/{id}/history")).await;
    assert_eq!(b["message"], "Repair state found");
    let idents: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ident"].as_str().unwrap())
        .collect();
    assert_eq!(
        idents,
        [
            "ss_state_check",
            "usb_diag_test",
            "replace_pcb",
            "usb_diag_test",
            "explain_skip_btb",
            "charge_2",
            "clean",
            "visual_inspection",
            "select_damaged_casing",
            "final_check"
        ]
    );
    assert_eq!(
        b["data"][4],
        json!({"ident": "explain_skip_btb", "name": "Skip the Battery Test"})
    );

    // Final check: the refurbishment date first, then back to ACTIVATED.
    let (s, b) = event(&server, id, "unit.pass").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("refurb_date"),
        "{b}"
    );
    ok_inputs(&server, id, json!({"refurb_date": "2018-03-30"})).await;
    ok_event(&server, id, "unit.pass").await;
    assert_eq!(state_of(&server, id).await, "returned_to_service");

    let (_, product) = server.get(&format!("/v1/products/{imei}")).await;
    let (_, state) = server
        .get(&format!("/v1/states/{}", product["latest_state_id"]))
        .await;
    assert_eq!(state["prev_state_type"], json!(8));
    assert_eq!(state["current_state_type"], json!(5));
    let (_, r) = server.get(&format!("/v1/repairs/{id}")).await;
    assert_eq!(r["outcome"], "ACTIVATED");
    assert_eq!(r["process"], "Repair and Return");
    assert_eq!(r["workflow_state_id"], "returned_to_service");
    assert!(r["refurbishment_date"].is_string());
    // Ending the repair went through the shared state change, so webhook
    // subscribers hear of it: a product-status notification for this unit.
    let payload = control_plane::catalogue::Column::computed(
        "payload",
        control_plane::catalogue::ColumnType::Text,
    );
    let stmt = sea_query::Query::select()
        .column(sea_query::Alias::new("payload"))
        .from(sea_query::Alias::new("notification"))
        .and_where(sea_query::Expr::col(sea_query::Alias::new("channel")).eq("product-status"))
        .and_where(sea_query::Expr::col(sea_query::Alias::new("product_imei")).eq(imei.as_str()))
        .to_owned();
    let notes = server.state.db.fetch_all(&stmt, &[&payload]).await.unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n["payload"].as_str().unwrap().contains("\"state\"")),
        "no product-status notification for the end of the repair: {notes:?}"
    );

    // The audit trail: one event row per action, and time per state.
    let events = rows(
        &server,
        "/v1/repair_workflow_events",
        "repair_id",
        json!(id),
    )
    .await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "repair.created");
    assert!(kinds.contains(&"battery.charged") && kinds.contains(&"unit.pass"));
    assert_eq!(
        events.len(),
        15,
        "creation and 14 accepted inputs/events; refused ones leave no trace: {kinds:?}"
    );
    assert_eq!(
        r["latest_workflow_event_id"],
        events.last().unwrap()["repair_workflow_event_id"]
    );
    let visits = rows(
        &server,
        "/v1/repair_workflow_states",
        "repair_id",
        json!(id),
    )
    .await;
    assert_eq!(visits.len(), 11);
    assert!(visits[..10].iter().all(|v| v["exit_time"].is_string()));
    assert!(visits[10]["exit_time"].is_null());
    assert_eq!(visits[10]["state_id"], "returned_to_service");

    // A finished repair takes nothing more; the unit is no longer in repair.
    let (s, b) = inputs(&server, id, json!({"refurb_date": "2018-03-30"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = server.get(&format!("/v1/products/{imei}/get_repair")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, b) = server.get("/v1/repairs/list_current_states").await;
    assert_eq!(b["data"], json!([]));
    // Methods the routes do not document.
    server
        .call_expecting(
            StatusCode::METHOD_NOT_ALLOWED,
            Method::POST,
            &format!("/v1/repairs/{id}/current_state"),
            None,
        )
        .await;
}

async fn battery_failure_terminates_the_unit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (imei, id) = repair(&server).await;
    ok_inputs(&server, id, json!({"reported_fault": "not_charging"})).await;
    let mut low: Json = serde_json::from_str(USB_PASS).unwrap();
    low["voltage"] = json!(5.2);
    ok_inputs(&server, id, low).await;
    assert_eq!(state_of(&server, id).await, "battery_test");
    ok_inputs(&server, id, json!({"measured_capacity_mah": 5000})).await;
    assert_eq!(state_of(&server, id).await, "battery_failed");
    let (_, r) = server.get(&format!("/v1/repairs/{id}")).await;
    assert_eq!(r["measured_battery_capacity"], json!(5000.0));
    ok_event(&server, id, "unit.scrap").await;
    let (_, product) = server.get(&format!("/v1/products/{imei}")).await;
    let (_, state) = server
        .get(&format!("/v1/states/{}", product["latest_state_id"]))
        .await;
    assert_eq!(state["current_state_type"], json!(9));
    let (_, r) = server.get(&format!("/v1/repairs/{id}")).await;
    assert_eq!(r["outcome"], "TERMINATED");
    assert!(r["refurbishment_date"].is_null());
}

/// Sends `body`; expects a 400 whose validation error names `input` and `rule`.
async fn refused(server: &TestServer, id: i64, body: Json, input: &str, rule: &str) {
    let (s, b) = inputs(server, id, body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {b}");
    assert_eq!(b["status"], "validation-error", "{b}");
    let message = b["validation_errors"][input]
        .as_str()
        .unwrap_or_else(|| panic!("{body}: no error for {input}: {b}"));
    assert!(
        message.starts_with(&format!("input '{input}' violates rule '{rule}'")),
        "{body}: {message}"
    );
}

async fn every_irt_rule_is_enforced(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, id) = repair(&server).await;

    // selection single, text minlength/maxlength, unknown inputs, bad bodies.
    refused(
        &server,
        id,
        json!({"reported_fault": "broken"}),
        "reported_fault",
        "options",
    )
    .await;
    refused(
        &server,
        id,
        json!({"reported_fault": ["no_power"]}),
        "reported_fault",
        "selection_type",
    )
    .await;
    refused(
        &server,
        id,
        json!({"reported_fault": null}),
        "reported_fault",
        "required",
    )
    .await;
    refused(
        &server,
        id,
        json!({"customer_complaint": "too short"}),
        "customer_complaint",
        "minlength",
    )
    .await;
    refused(
        &server,
        id,
        json!({"customer_complaint": "x".repeat(2001)}),
        "customer_complaint",
        "maxlength",
    )
    .await;
    refused(&server, id, json!({"colour": "red"}), "colour", "ident").await;
    for bad in [json!("no_power"), json!(42), json!({})] {
        let (s, b) = inputs(&server, id, bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad} -> {b}");
    }
    let (s, b) = event(&server, id, "battery.charged").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["validation_errors"]["event"]
            .as_str()
            .unwrap()
            .contains("not an event of state 'ss_state_check'"),
        "{b}"
    );
    let (s, _) = server
        .put(
            &format!("/v1/repairs/{id}/send_events"),
            json!({"evnt": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Several violations at once are all reported, and nothing is stored.
    let (s, b) = inputs(
        &server,
        id,
        json!({"reported_fault": "broken", "customer_complaint": "short"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["validation_errors"].as_object().unwrap().len(), 2, "{b}");
    assert_eq!(state_of(&server, id).await, "ss_state_check");
    // The spec's array-wrapped body is accepted.
    let (s, b) = inputs(
        &server,
        id,
        json!([{"reported_fault": "other", "customer_complaint": "Ne s'allume plus"}]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // string minlength/maxlength/options; float min/max/step/type.
    assert_eq!(state_of(&server, id).await, "usb_diag_test");
    refused(
        &server,
        id,
        json!({"serial": "MC0211"}),
        "serial",
        "minlength",
    )
    .await;
    refused(
        &server,
        id,
        json!({"serial": "MC0211-999002-1234"}),
        "serial",
        "maxlength",
    )
    .await;
    refused(
        &server,
        id,
        json!({"serial": 211999002}),
        "serial",
        "data_type",
    )
    .await;
    refused(
        &server,
        id,
        json!({"usb_port_result": "maybe"}),
        "usb_port_result",
        "options",
    )
    .await;
    refused(&server, id, json!({"voltage": 3.4}), "voltage", "min").await;
    refused(&server, id, json!({"voltage": 7.6}), "voltage", "max").await;
    refused(&server, id, json!({"voltage": 4.805}), "voltage", "step").await;
    refused(
        &server,
        id,
        json!({"voltage": "4.8"}),
        "voltage",
        "data_type",
    )
    .await;
    let mut low: Json = serde_json::from_str(USB_PASS).unwrap();
    low["voltage"] = json!(5.21);
    ok_inputs(&server, id, low).await;

    // int min/max/step/type.
    assert_eq!(state_of(&server, id).await, "battery_test");
    refused(
        &server,
        id,
        json!({"measured_capacity_mah": -10}),
        "measured_capacity_mah",
        "min",
    )
    .await;
    refused(
        &server,
        id,
        json!({"measured_capacity_mah": 20010}),
        "measured_capacity_mah",
        "max",
    )
    .await;
    refused(
        &server,
        id,
        json!({"measured_capacity_mah": 8005}),
        "measured_capacity_mah",
        "step",
    )
    .await;
    refused(
        &server,
        id,
        json!({"measured_capacity_mah": 8000.5}),
        "measured_capacity_mah",
        "data_type",
    )
    .await;
    refused(
        &server,
        id,
        json!({"measured_capacity_mah": "8000"}),
        "measured_capacity_mah",
        "data_type",
    )
    .await;
    ok_inputs(&server, id, json!({"measured_capacity_mah": 8010})).await;

    assert_eq!(state_of(&server, id).await, "charge_2");
    ok_inputs(&server, id, json!({"state_of_charge": 100})).await;
    ok_event(&server, id, "battery.charged").await;
    ok_event(&server, id, "cleaned").await;

    // int options, float options.
    assert_eq!(state_of(&server, id).await, "visual_inspection");
    refused(
        &server,
        id,
        json!({"usb_ports_working": 5}),
        "usb_ports_working",
        "options",
    )
    .await;
    refused(
        &server,
        id,
        json!({"fuse_rating": 3.0}),
        "fuse_rating",
        "options",
    )
    .await;
    ok_inputs(
        &server,
        id,
        json!({"usb_ports_working": 2, "fuse_rating": 7.5, "casing_condition": "damaged"}),
    )
    .await;

    // selection multi.
    assert_eq!(state_of(&server, id).await, "select_damaged_casing");
    refused(
        &server,
        id,
        json!({"damaged_parts": [69, 999]}),
        "damaged_parts",
        "options",
    )
    .await;
    refused(
        &server,
        id,
        json!({"damaged_parts": [69, 69]}),
        "damaged_parts",
        "options",
    )
    .await;
    refused(
        &server,
        id,
        json!({"damaged_parts": 69}),
        "damaged_parts",
        "selection_type",
    )
    .await;
    ok_inputs(&server, id, json!({"damaged_parts": []})).await;

    // datetime: the three formats, nothing else; text maxlength.
    assert_eq!(state_of(&server, id).await, "final_check");
    for good in ["14:30:00", "2018-03-30", "2018-03-30T14:30:00Z"] {
        ok_inputs(&server, id, json!({"refurb_date": good})).await;
    }
    for bad in [
        "2018-03-30 14:30:00",
        "2018-03-30T14:30:00",
        "30/03/2018",
        "2018-02-30",
        "24:00:00",
    ] {
        refused(
            &server,
            id,
            json!({"refurb_date": bad}),
            "refurb_date",
            "format",
        )
        .await;
    }
    refused(
        &server,
        id,
        json!({"technician_notes": "é".repeat(2001)}),
        "technician_notes",
        "maxlength",
    )
    .await;
    ok_inputs(&server, id, json!({"technician_notes": "é".repeat(2000)})).await;
    ok_event(&server, id, "unit.scrap").await;
    assert_eq!(state_of(&server, id).await, "terminated");
}

async fn undo_reverses_transitions_and_their_effects(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (imei, id) = repair(&server).await;
    let srv = &server;
    let undo = move |id: i64| async move {
        srv.call(Method::PUT, &format!("/v1/repairs/{id}/undo"), None)
            .await
    };
    let (s, b) = undo(id).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "nothing to undo yet: {b}");

    ok_inputs(&server, id, json!({"reported_fault": "no_power"})).await;
    let mut fail: Json = serde_json::from_str(USB_PASS).unwrap();
    fail["pcb_result"] = json!("fail");
    ok_inputs(&server, id, fail).await;
    ok_inputs(&server, id, json!({"replacement_part_type": 48})).await;
    assert_eq!(state_of(&server, id).await, "usb_diag_test");
    assert_eq!(
        rows(
            &server,
            "/v1/part_product_linker",
            "product_imei",
            json!(imei)
        )
        .await
        .len(),
        2
    );

    // Undo the PCB replacement: back in Replace PCB, the old PCB fitted again.
    let (s, b) = undo(id).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"status": "success", "message": "Repair updated",
               "data": {"ident": "replace_pcb", "name": "Replace PCB"}})
    );
    assert_eq!(state_of(&server, id).await, "replace_pcb");
    let links = rows(
        &server,
        "/v1/part_product_linker",
        "product_imei",
        json!(imei),
    )
    .await;
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(links[0]["date_removed"].is_null() && links[0]["removed_repair_id"].is_null());
    assert!(rows(
        &server,
        "/v1/repair_part_type_linker",
        "repair_id",
        json!(id)
    )
    .await
    .is_empty());
    assert!(rows(&server, "/v1/parts", "part_type_id", json!(48))
        .await
        .is_empty());
    let (_, h) = server.get(&format!("/v1/repairs/{id}/history")).await;
    assert_eq!(h["data"].as_array().unwrap().len(), 3, "{h}");

    // The restored state works as before, and undo is recorded in the audit trail.
    ok_inputs(&server, id, json!({"replacement_part_type": 44})).await;
    assert_eq!(state_of(&server, id).await, "usb_diag_test");
    let events = rows(
        &server,
        "/v1/repair_workflow_events",
        "repair_id",
        json!(id),
    )
    .await;
    let undo_event = events.iter().find(|e| e["event_id"] == "undo").unwrap();
    assert_eq!(undo_event["current_state_id"], "usb_diag_test");
    assert_eq!(undo_event["next_state_id"], "replace_pcb");

    // Undo step by step to the start: the inputs of each step are restored.
    for expected in ["replace_pcb", "usb_diag_test", "ss_state_check"] {
        let (s, b) = undo(id).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["data"]["ident"], expected);
    }
    let (s, _) = undo(id).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, h) = server.get(&format!("/v1/repairs/{id}/history")).await;
    assert_eq!(
        h["data"],
        json!([{"ident": "ss_state_check", "name": "SMART SOLAR State Check"}])
    );
    let visits = rows(
        &server,
        "/v1/repair_workflow_states",
        "repair_id",
        json!(id),
    )
    .await;
    assert_eq!(
        visits.iter().filter(|v| v["exit_time"].is_null()).count(),
        1
    );

    // A finished repair cannot be undone.
    let (_, other) = repair(&server).await;
    ok_inputs(&server, other, json!({"reported_fault": "no_power"})).await;
    let mut low: Json = serde_json::from_str(USB_PASS).unwrap();
    low["voltage"] = json!(5.0);
    ok_inputs(&server, other, low).await;
    ok_inputs(&server, other, json!({"measured_capacity_mah": 10})).await;
    ok_event(&server, other, "unit.scrap").await;
    let (s, b) = undo(other).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
}

async fn french_labels(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.token.clone();
    let (_, id) = repair(&server).await;
    ok_inputs(&server, id, json!({"reported_fault": "no_power"})).await;
    let mut fail: Json = serde_json::from_str(USB_PASS).unwrap();
    fail["pcb_result"] = json!("fail");
    ok_inputs(&server, id, fail).await;

    let path = format!("/v1/repairs/{id}/current_state");
    let (s, b) = call(&server, &token, Method::GET, &path, None, Some("fr")).await;
    assert_eq!(s, StatusCode::OK);
    // The spec's "Internationalization" example.
    assert_eq!(
        b["data"],
        json!({
            "description": "Le gabarit de test indique que cette unité a une carte de circuit imprimé défectueuse. Remplacer le PCB. Cliquez sur le bouton ci-dessous lorsque cela a été fait",
            "events": [],
            "ident": "replace_pcb",
            "inputs": [{
                "data_type": "selection",
                "ident": "replacement_part_type",
                "label": "Choisissez l'un de ces PCB de remplacement",
                "options": [
                    {"label": "BBOXX Home 2 PCB (Tiger 7)", "value": 61},
                    {"label": "BBOXX Home 2 PCB (Tiger 2)", "value": 44},
                    {"label": "BBOXX Home 2 PCB (Tiger 6)", "value": 48}
                ],
                "selection_type": "single"
            }],
            "name": "Remplacer le PCB"
        })
    );
    let (_, b) = call(
        &server,
        &token,
        Method::GET,
        &path,
        None,
        Some("fr-FR,fr;q=0.9,en;q=0.8"),
    )
    .await;
    assert_eq!(b["data"]["name"], "Remplacer le PCB");
    for english in [None, Some("de"), Some("en-GB"), Some("de,en;q=0.5")] {
        let (_, b) = call(&server, &token, Method::GET, &path, None, english).await;
        assert_eq!(b["data"]["name"], "Replace PCB", "{english:?}");
    }

    // Every text of every state is French: option labels, events, history, list.
    let (_, b) = call(
        &server,
        &token,
        Method::GET,
        &format!("/v1/repairs/{id}/history"),
        None,
        Some("fr"),
    )
    .await;
    assert_eq!(b["data"][0]["name"], "Vérification de l'état SMART SOLAR");
    assert_eq!(b["data"][1]["name"], "Test de diagnostic USB");
    let (_, b) = call(
        &server,
        &token,
        Method::GET,
        "/v1/repairs/list_current_states",
        None,
        Some("fr"),
    )
    .await;
    assert_eq!(b["data"][0]["repair_state_name"], "Remplacer le PCB");
    ok_inputs(&server, id, json!({"replacement_part_type": 44})).await;
    let (_, b) = call(&server, &token, Method::GET, &path, None, Some("fr")).await;
    assert_eq!(b["data"]["name"], "Test de diagnostic USB");
    assert_eq!(b["data"]["inputs"][0]["label"], "Numéro de série");
    assert_eq!(
        b["data"]["inputs"][3]["options"][1],
        json!({"label": "PCB défectueux", "value": "fail"})
    );
    ok_inputs(&server, id, serde_json::from_str(USB_PASS).unwrap()).await;
    ok_event(&server, id, "continue").await;
    let (_, b) = call(&server, &token, Method::GET, &path, None, Some("fr")).await;
    assert_eq!(
        b["data"]["events"],
        json!([{"ident": "battery.charged", "label": "Batterie chargée"}])
    );
    let (_, b) = call(
        &server,
        &token,
        Method::PUT,
        &format!("/v1/repairs/{id}/undo"),
        None,
        Some("fr"),
    )
    .await;
    assert_eq!(b["data"]["name"], "Passer le test de la batterie");
}

async fn permissions_and_entity_scope(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mine = server.seed_entity("Mine Ltd").await;
    let theirs = server.seed_entity("Theirs Ltd").await;
    let my_unit = unit(&server, Some(8)).await;
    let their_unit = unit(&server, Some(8)).await;
    link(&server, &my_unit, mine).await;
    link(&server, &their_unit, theirs).await;
    let tech = server
        .user("tech@mine.example", "TECHNICAL", "ENTITY", Some(mine))
        .await;
    let viewer = server
        .user("viewer@mine.example", "OVERVIEW", "GLOBAL", None)
        .await;

    // A TECHNICAL user of the entity repairs its own unit.
    let (s, b) = call(
        &server,
        &tech,
        Method::GET,
        &format!("/v1/products/{my_unit}/get_repair"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let my_repair = b["data"]["repair_id"].as_i64().unwrap();
    let (s, b) = call(
        &server,
        &tech,
        Method::PUT,
        &format!("/v1/repairs/{my_repair}/send_inputs"),
        Some(json!({"reported_fault": "no_power"})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Another entity's unit and repair do not exist for it.
    let (s, _) = call(
        &server,
        &tech,
        Method::GET,
        &format!("/v1/products/{their_unit}/get_repair"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, b) = server
        .get(&format!("/v1/products/{their_unit}/get_repair"))
        .await;
    let their_repair = b["data"]["repair_id"].as_i64().unwrap();
    for (method, action, body) in [
        (Method::GET, "current_state", None),
        (Method::GET, "history", None),
        (
            Method::PUT,
            "send_inputs",
            Some(json!({"reported_fault": "no_power"})),
        ),
        (
            Method::PUT,
            "send_events",
            Some(json!({"event": "continue"})),
        ),
        (Method::PUT, "undo", None),
    ] {
        let (s, b) = call(
            &server,
            &tech,
            method,
            &format!("/v1/repairs/{their_repair}/{action}"),
            body,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{action}: {b}");
        assert_eq!(b["message"], format!("Repair {their_repair} not found"));
    }
    assert_eq!(
        state_of(&server, their_repair).await,
        "ss_state_check",
        "nothing changed"
    );
    let (_, b) = call(
        &server,
        &tech,
        Method::GET,
        "/v1/repairs/list_current_states",
        None,
        None,
    )
    .await;
    let ids: Vec<i64> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repair_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![my_repair]);
    let (_, b) = call(
        &server,
        &tech,
        Method::GET,
        &format!("/v1/repairs/list_current_states?entity_id={theirs}"),
        None,
        None,
    )
    .await;
    assert_eq!(b["data"], json!([]));

    // OVERVIEW reads but does not write.
    let (s, _) = call(
        &server,
        &viewer,
        Method::GET,
        &format!("/v1/repairs/{their_repair}/current_state"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &server,
        &viewer,
        Method::GET,
        &format!("/v1/repairs/{their_repair}/history"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for (method, path, body) in [
        (
            Method::GET,
            format!("/v1/products/{their_unit}/get_repair"),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/repairs/{their_repair}/send_inputs"),
            Some(json!({"reported_fault": "no_power"})),
        ),
        (
            Method::PUT,
            format!("/v1/repairs/{their_repair}/send_events"),
            Some(json!({"event": "continue"})),
        ),
        (
            Method::PUT,
            format!("/v1/repairs/{their_repair}/undo"),
            None,
        ),
    ] {
        let (s, b) = call(&server, &viewer, method, &path, body, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {b}");
        assert!(b["message"].as_str().unwrap().contains("TECHNICAL"), "{b}");
    }
    let (s, _) = call(
        &server,
        "not-a-token",
        Method::GET,
        "/v1/repairs/list_current_states",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // list_current_states filters.
    let (_, b) = call(
        &server,
        &viewer,
        Method::GET,
        "/v1/repairs/list_current_states",
        None,
        None,
    )
    .await;
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        b["data"][0]["repair_id"],
        json!(their_repair),
        "newest first"
    );
    let (srv, viewer_token) = (&server, viewer.as_str());
    let filtered = move |q: String| async move {
        let (s, b) = call(
            srv,
            viewer_token,
            Method::GET,
            &format!("/v1/repairs/list_current_states?{q}"),
            None,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{q}: {b}");
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["repair_id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(filtered(format!("entity_id={mine}")).await, vec![my_repair]);
    assert_eq!(
        filtered("username=tech%40mine.example".into()).await,
        vec![my_repair]
    );
    assert_eq!(
        filtered(format!("username={}", common::urlencode(ADMIN))).await,
        vec![their_repair]
    );
    assert_eq!(
        filtered("repair_state=usb_diag_test".into()).await,
        vec![my_repair]
    );
    assert_eq!(
        filtered("repair_state=usb_diag_test&entity_id=99999".into()).await,
        Vec::<i64>::new()
    );
    let (s, b) = call(
        &server,
        &viewer,
        Method::GET,
        "/v1/repairs/list_current_states?entity_id=abc",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["validation_errors"]["entity_id"].is_string(), "{b}");
    let (s, _) = call(
        &server,
        &viewer,
        Method::GET,
        "/v1/repairs/list_current_states?state=x",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = server.get("/v1/repairs/abc/current_state").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn get_repair_needs_in_repair_system_and_a_workflow(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Not IN_REPAIR_SYSTEM: 400 with the unit's state.
    let activated = unit(&server, Some(5)).await;
    let (s, b) = server
        .get(&format!("/v1/products/{activated}/get_repair"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("IN_REPAIR_SYSTEM"),
        "{b}"
    );
    assert!(b["message"].as_str().unwrap().contains("ACTIVATED"), "{b}");
    let stateless = unit(&server, None).await;
    let (s, _) = server
        .get(&format!("/v1/products/{stateless}/get_repair"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = server.get("/v1/products/000000000000000/get_repair").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A product type without a workflow of its own: the generic one.
    let imei = unit(&server, Some(8)).await;
    let b = server
        .post_created("/v1/product_types", json!({"name": "Solar Water Pump"}))
        .await;
    server
        .put_ok(
            &format!("/v1/products/{imei}"),
            json!({"product_type_id": b["product_type_id"]}),
        )
        .await;
    let b = server
        .get_ok(&format!("/v1/products/{imei}/get_repair"))
        .await;
    let (_, r) = server
        .get(&format!("/v1/repairs/{}", b["data"]["repair_id"]))
        .await;
    assert_eq!(r["workflow_name"], "generic");

    // Selector rules: a USER rule without a workflow forbids; one naming an
    // unknown workflow is reported; an ENTITY rule (by GEIC) picks the workflow.
    let unit_a = unit(&server, Some(8)).await;
    let b = server.post_created("/v1/repair_workflow_selectors", json!({"product_type_id": 6, "workflow_name": null, "selector_type": "USER", "selector_value": ADMIN})).await;
    let rule = b["repair_workflow_selector_id"].clone();
    let (s, b) = server
        .get(&format!("/v1/products/{unit_a}/get_repair"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("for this user"),
        "{b}"
    );
    server
        .put_ok(
            &format!("/v1/repair_workflow_selectors/{rule}"),
            json!({"workflow_name": "bboxx_home_9"}),
        )
        .await;
    let (s, b) = server
        .get(&format!("/v1/products/{unit_a}/get_repair"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("bboxx_home_9"),
        "{b}"
    );
    let (s, _) = server
        .delete(&format!("/v1/repair_workflow_selectors/{rule}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let geic = server
        .seed(
            "entity",
            json!({"name": "Kigali Repairs", "bboxx_company_flag": true, "geic": "RW-KGL-01"}),
        )
        .await
        .as_i64()
        .unwrap();
    link(&server, &unit_a, geic).await;
    let b = server.post_created("/v1/repair_workflow_selectors", json!({"product_type_id": 6, "workflow_name": null, "selector_type": "ENTITY", "selector_value": "RW-KGL-01"})).await;
    let rule = b["repair_workflow_selector_id"].clone();
    let (s, b) = server
        .get(&format!("/v1/products/{unit_a}/get_repair"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("for this entity"),
        "{b}"
    );
    server
        .put_ok(
            &format!("/v1/repair_workflow_selectors/{rule}"),
            json!({"workflow_name": "bboxx_home_2"}),
        )
        .await;
    let b = server
        .get_ok(&format!("/v1/products/{unit_a}/get_repair"))
        .await;
    let id = b["data"]["repair_id"].as_i64().unwrap();
    assert_eq!(state_of(&server, id).await, "ss_state_check");
}

// ------------------------------------------- a workflow for every product type

/// One step of a walk through a workflow.
enum Step {
    Inputs(Json),
    Event(&'static str),
}

/// How a product of one kind is made, and the walk that repairs it: the
/// state after each step, the French name of the first state after the
/// check, and where the walk ends.
struct Walk {
    /// `create_product/<kind>`, or `create_hub2`; `None`: a product type no
    /// creation endpoint makes (seeded), served by the generic workflow.
    create: Option<&'static str>,
    product_type_id: i64,
    workflow: &'static str,
    steps: Vec<(Step, &'static str)>,
    french: (&'static str, &'static str),
}

fn walks() -> Vec<Walk> {
    use Step::{Event, Inputs};
    let check = || (Inputs(json!({"reported_fault": "no_power"})), "");
    let finish = || {
        [
            (Inputs(json!({"refurb_date": "2026-12-06"})), "final_check"),
            (Event("unit.pass"), "returned_to_service"),
        ]
    };
    let battery = |voltage: f64, capacity: i64| {
        vec![
            (
                Inputs(
                    json!({"serial": "HB000501-1234-5", "voltage": voltage, "pcb_result": "pass"}),
                ),
                "battery_test",
            ),
            (Inputs(json!({"measured_capacity_mah": capacity})), "charge"),
            (Inputs(json!({"state_of_charge": 80})), "charge"),
            (Event("battery.charged"), "clean"),
            (Event("cleaned"), "final_check"),
        ]
    };
    let with = |first: (Step, &'static str),
                first_state: &'static str,
                middle: Vec<(Step, &'static str)>| {
        let mut steps = vec![(first.0, first_state)];
        steps.extend(middle);
        steps.extend(finish());
        steps
    };
    let hub = || {
        with(
            check(),
            "connectivity_test",
            vec![
                (
                    Inputs(
                        json!({"serial": "HB000501-1234-5", "signal_dbm": -80, "modem_result": "pass"}),
                    ),
                    "clean",
                ),
                (Event("cleaned"), "final_check"),
            ],
        )
    };
    let mut enterprise = battery(24.0, 90_000);
    enterprise[0].0 = Inputs(
        json!({"serial": "HB000501-1234-5", "voltage": 24.0, "pcb_result": "pass", "inverter_output_volts": 230.0}),
    );
    vec![
        Walk {
            create: Some("/v1/products/create_product/home2"),
            product_type_id: 6,
            workflow: "bboxx_home_2",
            steps: with(
                check(),
                "usb_diag_test",
                vec![
                    (
                        Inputs(serde_json::from_str(USB_PASS).unwrap()),
                        "explain_skip_btb",
                    ),
                    (Event("continue"), "charge_2"),
                    (Inputs(json!({"state_of_charge": 80})), "charge_2"),
                    (Event("battery.charged"), "clean"),
                    (Event("cleaned"), "visual_inspection"),
                    (
                        Inputs(
                            json!({"usb_ports_working": 4, "fuse_rating": 5.0, "casing_condition": "ok"}),
                        ),
                        "final_check",
                    ),
                ],
            ),
            french: ("usb_diag_test", "Test de diagnostic USB"),
        },
        Walk {
            create: Some("/v1/products/create_product/home3"),
            product_type_id: 10,
            workflow: "bboxx_home_3",
            steps: with(check(), "diag_test", battery(12.6, 17_000)),
            french: ("diag_test", "Test de diagnostic"),
        },
        Walk {
            create: Some("/v1/products/create_product/enterprise"),
            product_type_id: 4,
            workflow: "bboxx_enterprise",
            steps: with(check(), "diag_test", enterprise),
            french: ("diag_test", "Test de diagnostic"),
        },
        Walk {
            create: Some("/v1/products/create_hub2"),
            product_type_id: 7,
            workflow: "bboxx_hub_2",
            steps: hub(),
            french: ("connectivity_test", "Test de connectivité"),
        },
        Walk {
            create: Some("/v1/products/create_product/hub2"),
            product_type_id: 7,
            workflow: "bboxx_hub_2",
            steps: hub(),
            french: ("connectivity_test", "Test de connectivité"),
        },
        Walk {
            create: None,
            product_type_id: 0,
            workflow: "generic",
            steps: with(
                check(),
                "diagnosis",
                vec![
                    (
                        Inputs(json!({"serial": "X-1", "diagnosis": "repairable"})),
                        "repair",
                    ),
                    (Inputs(json!({"work_done": "replaced the fuse"})), "repair"),
                    (Event("repaired"), "final_check"),
                ],
            ),
            french: ("diagnosis", "Diagnostic"),
        },
    ]
}

/// A product made the way the system makes it; returns its IMEI.
async fn made(server: &TestServer, create: Option<&str>) -> (String, i64) {
    let n = NEXT_UNIT.fetch_add(1, Ordering::Relaxed);
    let imei = format!("8649{:03}{n:08}", std::process::id() % 1000);
    let pcb = json!({"imei": imei, "imsi": format!("2{}", &imei[1..]),
                     "device_key": format!("dk{imei}"), "manufacturer": "A Factory"});
    match create {
        Some(path) if path.ends_with("create_hub2") => {
            server.post_ok(path, pcb).await;
        }
        Some(path) => {
            server.post_ok("/v1/parts/create_tiger_pcb", pcb).await;
            let mut body = json!({"pcb_imei": imei});
            if !path.ends_with("hub2") {
                body["battery"] =
                    json!({"part_type_id": 43, "serial_number": format!("BAT{imei}")});
            }
            server.post_ok(path, body).await;
        }
        None => {
            // A product type added as data, with no workflow of its own.
            let b = server
                .post_created(
                    "/v1/product_types",
                    json!({"name": format!("Solar Fridge {n}")}),
                )
                .await;
            let product_type = b["product_type_id"].as_i64().unwrap();
            server
                .seed(
                    "product",
                    json!({"product_imei": imei, "product_type_id": product_type}),
                )
                .await;
        }
    }
    let (_, p) = server.get(&format!("/v1/products/{imei}")).await;
    (imei, p["product_type_id"].as_i64().unwrap())
}

/// Each product type the system creates has its own workflow and any other
/// type the generic one, each walked to the end through get_repair,
/// current_state (in English and French), send_inputs, send_events, history
/// and undo. (Before issue 19 only BBOXX Home 2 had a workflow: a Hub 2 in
/// repair got 400 "No repair workflow is available for product type 7".)
async fn every_product_type_the_system_creates_can_be_repaired(backend: Backend) {
    let server = TestServer::start(backend).await;
    for walk in walks() {
        let w = walk.workflow;
        let (imei, product_type) = made(&server, walk.create).await;
        if walk.create.is_some() {
            assert_eq!(product_type, walk.product_type_id, "{w}");
        }
        set_state(&server, &imei, 8).await;
        let b = server
            .get_ok(&format!("/v1/products/{imei}/get_repair"))
            .await;
        assert_eq!(b["message"], "Repair created", "{w}");
        assert_eq!(
            b["data"]["config"].is_object(),
            walk.create.is_some(),
            "{w}: config {b}"
        );
        let id = b["data"]["repair_id"].as_i64().unwrap();
        let (_, r) = server.get(&format!("/v1/repairs/{id}")).await;
        assert_eq!(r["workflow_name"], w);
        assert_eq!(state_of(&server, id).await, "ss_state_check", "{w}");

        let mut visited = vec!["ss_state_check".to_string()];
        for (n, (step, after)) in walk.steps.iter().enumerate() {
            match step {
                Step::Inputs(body) => ok_inputs(&server, id, body.clone()).await,
                Step::Event(e) => ok_event(&server, id, e).await,
            }
            let now = state_of(&server, id).await;
            if !after.is_empty() {
                assert_eq!(now, *after, "{w}: step {n}");
            }
            if visited.last() != Some(&now) {
                visited.push(now.clone());
            }
            if now == walk.french.0 {
                // French texts, then undo this transition and redo it.
                let (_, fr) = call(
                    &server,
                    &server.token,
                    Method::GET,
                    &format!("/v1/repairs/{id}/current_state"),
                    None,
                    Some("fr-FR"),
                )
                .await;
                assert_eq!(fr["data"]["name"], walk.french.1, "{w}: {fr}");
                let b = server
                    .call_expecting(
                        StatusCode::OK,
                        Method::PUT,
                        &format!("/v1/repairs/{id}/undo"),
                        None,
                    )
                    .await;
                assert_eq!(b["data"]["ident"], "ss_state_check", "{w}");
                let (_, h) = server.get(&format!("/v1/repairs/{id}/history")).await;
                assert_eq!(h["data"].as_array().unwrap().len(), 1, "{w}: {h}");
                let Step::Inputs(body) = step else {
                    panic!("{w}: the French state follows inputs")
                };
                ok_inputs(&server, id, body.clone()).await;
                assert_eq!(state_of(&server, id).await, walk.french.0, "{w}");
            }
        }
        let h = server.get_ok(&format!("/v1/repairs/{id}/history")).await;
        let idents: Vec<String> = h["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["ident"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(idents, visited, "{w}");
        let (_, r) = server.get(&format!("/v1/repairs/{id}")).await;
        assert_eq!(r["outcome"], "ACTIVATED", "{w}: {r}");
        let (_, product) = server.get(&format!("/v1/products/{imei}")).await;
        let (_, state) = server
            .get(&format!("/v1/states/{}", product["latest_state_id"]))
            .await;
        assert_eq!(state["current_state_type"], json!(5), "{w}");
    }
}
