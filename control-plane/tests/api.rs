//! The relational API through real HTTP, on SQLite and on PostgreSQL.

mod common;

use common::{fake_body, link, Backend, TestServer, ADMIN};
use reqwest::StatusCode;
use serde_json::{json, Value as Json};

both_backends!(
    crud_on_every_table,
    undocumented_methods_answer_405,
    every_filter_operator,
    pagination_and_single,
    num_results_on_every_kind_of_page,
    permissions_are_enforced,
    entity_scope_hides_other_entities,
    login_tokens_and_expiry,
    bad_input_gets_clear_400s,
    reference_data_is_seeded,
);

/// POST, GET, list with a filter, PUT and DELETE on every catalogue table
/// whose spec documents those methods, with bodies generated from the catalogue.
async fn crud_on_every_table(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut exercised = 0;
    for table in server.catalogue().tables().to_vec() {
        let Some(path) = table.paths.first() else {
            continue;
        };
        let pk = table.primary_key().name.clone();
        let (id, created) = if table.methods.post.is_some() {
            let body = fake_body(&server, &table).await;
            let created = server
                .post_created(&format!("/v1{path}"), Json::Object(body.clone()))
                .await;
            for (k, v) in &body {
                if table.column(k).is_some_and(|c| !c.is_write_only()) {
                    assert_eq!(&created[k], v, "POST {path} field {k}");
                }
            }
            assert!(
                created["created_at"].is_string(),
                "created_at set on {path}"
            );
            assert_eq!(created["created_by"], json!(ADMIN));
            assert!(created["modified_at"].is_null());
            assert!(created.get("password").is_none(), "password never returned");
            (created[&pk].clone(), Some(created))
        } else {
            (server.seed(&table.name, json!({})).await, None)
        };
        let id_text = id
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| id.to_string());
        let item = format!("/v1{path}/{}", common::urlencode(&id_text));
        let got = server.get_ok(&item).await;
        assert_eq!(got[&pk], id);
        if let Some(created) = &created {
            // POST answers with the new row exactly as a GET shows it: same fields, same
            // order, same values (the insert returns them itself when no scope applies).
            assert_eq!(&got, created, "POST {path} answer against GET {item}");
            let keys = |v: &Json| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(keys(&got), keys(created), "POST {path} field order");
        }
        let (s, list) = server
            .list(
                &format!("/v1{path}"),
                json!({"filters": [{"name": pk, "op": "eq", "val": id}]}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "list {path}: {list}");
        assert_eq!(list["num_results"], json!(1), "list {path}");
        assert_eq!(list["objects"][0][&pk], id);
        if table.methods.put.is_some() {
            let change = table.columns.iter().find(|c| {
                !c.is_system()
                    && !c.primary_key
                    && c.foreign_key.is_none()
                    && c.options.is_none()
                    && matches!(
                        c.ty,
                        control_plane::catalogue::ColumnType::String
                            | control_plane::catalogue::ColumnType::Text
                    )
                    && !c.is_write_only()
            });
            let body = match change {
                Some(c) => json!({ c.name.clone(): "changed" }),
                None => json!({}),
            };
            let put = server.put_ok(&item, body.clone()).await;
            if let Some(c) = change {
                assert_eq!(put[&c.name], json!("changed"), "PUT {item}");
            }
            assert!(
                put["modified_at"].is_string(),
                "modified_at set by PUT {item}"
            );
            assert_eq!(put["modified_by"], json!(ADMIN));
        }
        if table.methods.delete.is_some() {
            let r = server
                .client
                .delete(server.url(&item))
                .header("Authorization", format!("Token token={}", server.token))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            if status == StatusCode::BAD_REQUEST {
                // Rows that other rows point at (the seeded admin user's
                // entity, say) may not be deleted; the message says so.
                assert!(text.contains("still referenced"), "DELETE {item}: {text}");
            } else {
                assert_eq!(status, StatusCode::NO_CONTENT, "DELETE {item}: {text}");
                assert_eq!(text, "", "204 has an empty body");
                assert_eq!(server.get(&item).await.0, StatusCode::NOT_FOUND);
            }
        }
        exercised += 1;
    }
    assert!(exercised >= 75, "only {exercised} tables have routes");
}

async fn undocumented_methods_answer_405(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Products are created by actions only; balances are read-only.
    let (s, body) = server.post("/v1/products", json!({})).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["status"], json!("error"));
    let (s, _) = server.put("/v1/balances/1", json!({})).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = server.delete("/v1/action_types").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    // Both documented spellings of the dead-letter path work.
    assert_eq!(server.get("/v1/rtc_dead_letter").await.0, StatusCode::OK);
    assert_eq!(server.get("/v1/rtc_dead_letters").await.0, StatusCode::OK);
    let (s, body) = server.get("/v1/no_such_table").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
}

async fn seed_products(server: &TestServer) -> Vec<String> {
    let imeis: Vec<String> = (1..=5).map(|i| format!("35000000000000{i}")).collect();
    for (i, imei) in imeis.iter().enumerate() {
        let i = i as i64;
        server
            .seed(
                "product",
                json!({
                    "product_imei": imei,
                    "serial_number": format!("SN-{i}"),
                    "imsi": format!("99900000000000{i}"),
                    "product_type_id": if i < 3 { 6 } else { 7 },
                    "current_enable_flag": i % 2 == 0,
                    "desired_enable_flag": true,
                    "rtc_enabled_flag": false,
                    "dcm_enabled_flag": false,
                    "is_payg": true,
                    "gps_lat": i as f64,
                    "gps_lon": if i == 4 { Json::Null } else { json!(i as f64) },
                    "assembler": if i == 1 { "Assembly House" } else { "other" },
                }),
            )
            .await;
    }
    for imei in &imeis[..2] {
        server
            .seed("product_note", json!({"product_imei": imei}))
            .await;
    }
    imeis
}

async fn filtered(server: &TestServer, filters: Json) -> Vec<String> {
    let (s, body) = server
        .list("/v1/products", json!({"filters": filters, "order_by": [{"field": "product_imei", "direction": "asc"}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{filters}: {body}");
    body["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["product_imei"].as_str().unwrap()[14..].to_string())
        .collect()
}

async fn every_filter_operator(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_products(&server).await;
    let cases: Vec<(Json, &[&str])> = vec![
        (
            json!([{"name": "product_type_id", "op": "==", "val": 7}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "product_type_id", "op": "eq", "val": 7}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "product_type_id", "op": "equals", "val": 7}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "product_type_id", "op": "equal_to", "val": 7}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "product_type_id", "op": "equals_to", "val": 7}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "product_type_id", "op": "!=", "val": 7}]),
            &["1", "2", "3"],
        ),
        (
            json!([{"name": "product_type_id", "op": "neq", "val": 7}]),
            &["1", "2", "3"],
        ),
        (
            json!([{"name": "product_type_id", "op": "does_not_equal", "val": 7}]),
            &["1", "2", "3"],
        ),
        (
            json!([{"name": "product_type_id", "op": "not_equal_to", "val": 7}]),
            &["1", "2", "3"],
        ),
        (
            json!([{"name": "gps_lat", "op": ">", "val": 2}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "gps_lat", "op": "gt", "val": 2}]),
            &["4", "5"],
        ),
        (json!([{"name": "gps_lat", "op": "<", "val": 1}]), &["1"]),
        (json!([{"name": "gps_lat", "op": "lt", "val": 1}]), &["1"]),
        (
            json!([{"name": "gps_lat", "op": ">=", "val": 3}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "gps_lat", "op": "ge", "val": 3}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "gps_lat", "op": "gte", "val": 3}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "gps_lat", "op": "geq", "val": 3}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "gps_lat", "op": "<=", "val": 1}]),
            &["1", "2"],
        ),
        (
            json!([{"name": "gps_lat", "op": "le", "val": 1}]),
            &["1", "2"],
        ),
        (
            json!([{"name": "gps_lat", "op": "lte", "val": 1}]),
            &["1", "2"],
        ),
        (
            json!([{"name": "gps_lat", "op": "leq", "val": 1}]),
            &["1", "2"],
        ),
        (
            json!([{"name": "serial_number", "op": "in", "val": ["SN-0", "SN-3", "nope"]}]),
            &["1", "4"],
        ),
        (
            json!([{"name": "serial_number", "op": "not_in", "val": ["SN-0", "SN-3"]}]),
            &["2", "3", "5"],
        ),
        (
            json!([{"name": "gps_lon", "op": "is_null", "val": ""}]),
            &["5"],
        ),
        (
            json!([{"name": "gps_lon", "op": "is_not_null"}]),
            &["1", "2", "3", "4"],
        ),
        (
            json!([{"name": "assembler", "op": "like", "val": "Assembly%"}]),
            &["2"],
        ),
        (
            json!([{"name": "assembler", "op": "like", "val": "assembly%"}]),
            &[],
        ),
        (
            json!([{"name": "assembler", "op": "ilike", "val": "assembly%"}]),
            &["2"],
        ),
        (
            json!([{"name": "current_enable_flag", "op": "eq", "val": true}]),
            &["1", "3", "5"],
        ),
        // Column to column, both spellings of the second name.
        (
            json!([{"name": "current_enable_flag", "op": "eq", "field": "desired_enable_flag"}]),
            &["1", "3", "5"],
        ),
        (
            json!([{"name": "gps_lat", "op": "equals_to", "fieldname": "gps_lon"}]),
            &["1", "2", "3", "4"],
        ),
        // Boolean formulas, nested.
        (
            json!([{"or": [{"name": "serial_number", "op": "eq", "val": "SN-0"},
                           {"and": [{"name": "product_type_id", "op": "eq", "val": 7}, {"name": "gps_lat", "op": "gt", "val": 3}]}]}]),
            &["1", "5"],
        ),
        // Relations: to-one by relation__field, to-many with any/has.
        (
            json!([{"name": "product_type__name", "op": "eq", "val": "BBOXX Hub 2"}]),
            &["4", "5"],
        ),
        (
            json!([{"name": "notes", "op": "any", "val": {"name": "product_imei", "op": "is_not_null"}}]),
            &["1", "2"],
        ),
        (
            json!([{"name": "product_type", "op": "has", "val": {"name": "name", "op": "like", "val": "%Home 2"}}]),
            &["1", "2", "3"],
        ),
    ];
    for (filters, expected) in cases {
        let got = filtered(&server, filters.clone()).await;
        assert_eq!(got, expected.to_vec(), "filters {filters}");
    }
    // order_by desc, and a relation in order_by.
    let (_, body) = server
        .list(
            "/v1/products",
            json!({"order_by": [{"field": "gps_lat", "direction": "desc"}]}),
        )
        .await;
    let first = body["objects"][0]["product_imei"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first.ends_with('5'), "{body}");
    // group_by selects the grouped fields.
    let (s, body) = server
        .list(
            "/v1/products",
            json!({"group_by": [{"field": "product_type_id"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["num_results"], json!(2));
}

/// Creates hubs `hub-00`, `hub-01`, ... of entity 1.
async fn post_hubs(server: &TestServer, n: usize) {
    for i in 0..n {
        server
            .post_created(
                "/v1/hubs",
                json!({"name": format!("hub-{i:02}"), "entity_id": 1}),
            )
            .await;
    }
}

async fn pagination_and_single(backend: Backend) {
    let server = TestServer::start(backend).await;
    post_hubs(&server, 25).await;
    let body = server.get_ok("/v1/hubs").await;
    assert_eq!(body["num_results"], json!(25));
    assert_eq!(
        body["objects"].as_array().unwrap().len(),
        10,
        "default 10 per page"
    );
    assert_eq!(body["page"], json!(1));
    assert_eq!(body["total_pages"], json!(3));
    let (_, body) = server.get("/v1/hubs?page=3&results_per_page=10").await;
    assert_eq!(body["objects"].as_array().unwrap().len(), 5);
    assert_eq!(body["page"], json!(3));
    let (_, body) = server.get("/v1/hubs?results_per_page=1000").await;
    assert_eq!(
        body["objects"].as_array().unwrap().len(),
        25,
        "capped at the maximum of 100, which is more than 25"
    );
    // q's own limit and offset apply first.
    let (_, body) = server
        .list(
            "/v1/hubs",
            json!({"limit": 4, "offset": 2, "order_by": [{"field": "name", "direction": "asc"}]}),
        )
        .await;
    assert_eq!(body["num_results"], json!(4));
    assert_eq!(body["objects"][0]["name"], json!("hub-02"));
    // single: exactly one -> the object; none -> 404; several -> 400.
    let (s, body) = server
        .list(
            "/v1/hubs",
            json!({"filters": [{"name": "name", "op": "eq", "val": "hub-07"}], "single": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["name"], json!("hub-07"));
    let (s, _) = server
        .list(
            "/v1/hubs",
            json!({"filters": [{"name": "name", "op": "eq", "val": "nope"}], "single": true}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = server.list("/v1/hubs", json!({"single": true})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = server.get("/v1/hubs?page=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    // `not_any` needs a relation, like `any`.
    let (s, body) = server
        .list(
            "/v1/hubs",
            json!({"filters": [{"name": "name", "op": "not_any", "val": {"name": "x", "op": "eq", "val": 1}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string()
            .contains("op 'not_any' needs a relation name, but 'name' is a field"),
        "{body}"
    );
}

/// `num_results`, `total_pages` and the page's rows on every kind of page (full, short
/// last, empty past the end, an empty result; with q's own limit and offset, with a filter,
/// with `group_by`), against what the rows themselves say. On PostgreSQL the page and its
/// count come back from one statement, and on both backends a page may skip the COUNT when
/// it can tell the size itself: every such shortcut is checked here.
async fn num_results_on_every_kind_of_page(backend: Backend) {
    let server = TestServer::start(backend).await;
    post_hubs(&server, 23).await;
    let by_name = json!([{"field": "name", "direction": "asc"}]);
    let mine = json!({"name": "name", "op": "like", "val": "hub-%"});
    let cases = [
        // (q, size of the whole result, first name of the result)
        (json!({"filters": [mine], "order_by": by_name}), 23, Some(0)),
        (
            json!({"filters": [mine, {"name": "name", "op": "lt", "val": "hub-10"}], "order_by": by_name}),
            10,
            Some(0),
        ),
        (
            json!({"filters": [mine], "order_by": by_name, "limit": 12, "offset": 3}),
            12,
            Some(3),
        ),
        (
            json!({"filters": [mine], "order_by": by_name, "offset": 20}),
            3,
            Some(20),
        ),
        (
            json!({"filters": [mine], "order_by": by_name, "offset": 30}),
            0,
            None,
        ),
        (
            json!({"filters": [{"name": "name", "op": "eq", "val": "nope"}]}),
            0,
            None,
        ),
    ];
    for (q, size, first) in &cases {
        let size: u64 = *size;
        for per_page in [1u64, 5, 10, 12, 23, 100] {
            let pages = size.div_ceil(per_page);
            for page in 1..=pages + 2 {
                let path = format!(
                    "/v1/hubs?q={}&page={page}&results_per_page={per_page}",
                    common::urlencode(&q.to_string())
                );
                let (s, body) = server.get(&path).await;
                assert_eq!(s, StatusCode::OK, "{path}: {body}");
                let at = format!("q {q}, page {page} of {per_page}: {body}");
                assert_eq!(body["num_results"], json!(size), "{at}");
                assert_eq!(body["total_pages"], json!(pages), "{at}");
                assert_eq!(body["page"], json!(page), "{at}");
                let skipped = (page - 1) * per_page;
                let on_page = size.saturating_sub(skipped).min(per_page);
                let objects = body["objects"].as_array().unwrap();
                assert_eq!(objects.len() as u64, on_page, "{at}");
                if let (Some(first), Some(row)) = (first, objects.first()) {
                    let want = format!("hub-{:02}", first + skipped);
                    assert_eq!(row["name"], json!(want), "{at}");
                }
            }
        }
    }
    // group_by: the groups are counted, not the rows.
    let q = json!({"group_by": [{"field": "entity_id"}], "filters": [mine]});
    for page in 1..=3 {
        let path = format!(
            "/v1/hubs?q={}&page={page}&results_per_page=1",
            common::urlencode(&q.to_string())
        );
        let body = server.get_ok(&path).await;
        assert_eq!(body["num_results"], json!(1), "page {page}: {body}");
        assert_eq!(body["total_pages"], json!(1), "page {page}: {body}");
        let objects = body["objects"].as_array().unwrap();
        assert_eq!(objects.len(), usize::from(page == 1), "page {page}: {body}");
    }
}

async fn permissions_are_enforced(backend: Backend) {
    let server = TestServer::start(backend).await;
    let overview = server
        .user("viewer@example.com", "OVERVIEW", "GLOBAL", None)
        .await;
    let admin = server
        .user("admin2@example.com", "ADMIN", "GLOBAL", None)
        .await;
    assert_eq!(
        server.get_as(&overview, "/v1/action_types").await.0,
        StatusCode::OK
    );
    let (s, body) = server
        .post_as(
            &overview,
            "/v1/action_types",
            json!({"name": "a", "label": "a"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("SYSTEM"),
        "{body}"
    );
    let (s, _) = server
        .post_as(
            &admin,
            "/v1/action_types",
            json!({"name": "a", "label": "a"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "ADMIN < SYSTEM");
    // Users are SYSTEM only, and password hashes never leave the server.
    assert_eq!(
        server.get_as(&admin, "/v1/users").await.0,
        StatusCode::FORBIDDEN
    );
    let users = server.get_ok("/v1/users").await;
    assert!(
        users["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u.get("password").is_none()),
        "{users}"
    );
    assert!(!users.to_string().contains("argon2"));
    // Nor can a filter test guesses against a hash.
    let probe = json!({"filters": [{"name": "password", "op": "like", "val": "$argon2%"}]});
    let (s, body) = server.list("/v1/users", probe).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("password"),
        "{body}"
    );
    // validate_user endpoints are SYSTEM.
    assert_eq!(
        server
            .get_as(&admin, "/v1/auth/validate_user?username=x")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

async fn entity_scope_hides_other_entities(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imeis = seed_products(&server).await;
    let mine = server.seed_entity("Mine Ltd").await;
    let theirs = server.seed_entity("Theirs Ltd").await;
    link(&server, &imeis[0], mine).await;
    link(&server, &imeis[1], mine).await;
    link(&server, &imeis[2], theirs).await;
    let token = server
        .user("tech@mine.example", "SYSTEM", "ENTITY", Some(mine))
        .await;
    let (s, body) = server.list_as(&token, "/v1/products", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["num_results"], json!(2), "{body}");
    // Another entity's product: 404 on GET, PUT and DELETE, as if it did not exist.
    let theirs_path = format!("/v1/products/{}", imeis[2]);
    assert_eq!(
        server.get_as(&token, &theirs_path).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .put_as(&token, &theirs_path, json!({"assembler": "x"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.delete_as(&token, &theirs_path).await.0,
        StatusCode::NOT_FOUND
    );
    // Rows that reference products are scoped too, including through filters.
    let (_, notes) = server.list_as(&token, "/v1/product_notes", json!({})).await;
    assert_eq!(notes["num_results"], json!(2));
    server
        .seed("product_note", json!({"product_imei": imeis[2]}))
        .await;
    let (_, notes) = server.list_as(&token, "/v1/product_notes", json!({})).await;
    assert_eq!(notes["num_results"], json!(2), "their note stays hidden");
    let probe = json!({"filters": [{"name": "product_imei", "op": "eq", "val": imeis[2]}]});
    let (_, body) = server.list_as(&token, "/v1/product_notes", probe).await;
    assert_eq!(body["num_results"], json!(0));
    // A relation filter cannot see through to hidden rows either.
    let probe = json!({"filters": [{"name": "product_entity_linker", "op": "any", "val": {"name": "entity_id", "op": "eq", "val": theirs}}]});
    let (_, body) = server.list_as(&token, "/v1/products", probe).await;
    assert_eq!(body["num_results"], json!(0));
    // Creating a row for another entity's product is refused.
    let (s, body) = server
        .post_as(
            &token,
            "/v1/product_notes",
            json!({"product_imei": imeis[2], "note": "x"}),
        )
        .await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::BAD_REQUEST,
        "{s} {body}"
    );
    let (_, notes) = server.list("/v1/product_notes", json!({})).await;
    assert_eq!(notes["num_results"], json!(3), "nothing was written");
    // A GLOBAL user sees everything.
    let (_, body) = server.list("/v1/products", json!({})).await;
    assert_eq!(body["num_results"], json!(5));
}

async fn login_tokens_and_expiry(backend: Backend) {
    let server = TestServer::start(backend).await;
    // JSON login works too, and the answer has the spec's shape.
    let r = server
        .client
        .post(server.url("/v1/auth/login"))
        .json(&json!({"username": ADMIN, "password": common::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Json = r.json().await.unwrap();
    let ok = &body["message"]["login_successful"];
    assert_eq!(body["status"], json!("success"));
    for key in [
        "username",
        "entity_id",
        "display_name",
        "name",
        "user_product_visibility",
        "hub_id",
        "shop_id",
        "API_token",
        "token_expiry",
        "permissions",
    ] {
        assert!(ok.get(key).is_some(), "login answer lacks {key}: {body}");
    }
    assert_eq!(ok["API_token"].as_str().unwrap().len(), 64);
    assert_eq!(ok["permissions"], json!("SYSTEM"));
    assert_eq!(ok["user_product_visibility"], json!("GLOBAL"));
    assert!(
        ok["token_expiry"].as_str().unwrap().ends_with(" GMT"),
        "{ok}"
    );
    // Wrong password, unknown user: 401.
    let r = server
        .client
        .post(server.url("/v1/auth/login"))
        .form(&[("username", ADMIN), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // No token, garbage token: 401.
    let r = server
        .client
        .get(server.url("/v1/action_types"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.get_as("garbage", "/v1/action_types").await.0,
        StatusCode::UNAUTHORIZED
    );
    // The token slides: used after 2h it lives on; unused for 3h it expires.
    let token = server.token.clone();
    server.state.clock.advance(2 * 3600);
    assert_eq!(
        server.get_as(&token, "/v1/action_types").await.0,
        StatusCode::OK
    );
    server.state.clock.advance(2 * 3600);
    assert_eq!(
        server.get_as(&token, "/v1/action_types").await.0,
        StatusCode::OK,
        "extended by the last use"
    );
    server.state.clock.advance(3 * 3600 + 1);
    let (s, body) = server.get_as(&token, "/v1/action_types").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    // Failed logins are throttled.
    for _ in 0..5 {
        server
            .client
            .post(server.url("/v1/auth/login"))
            .form(&[("username", "victim"), ("password", "x")])
            .send()
            .await
            .unwrap();
    }
    let r = server
        .client
        .post(server.url("/v1/auth/login"))
        .form(&[("username", "victim"), ("password", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // validate_user(_and_password), home.
    let token = server.login(ADMIN, common::ADMIN_PASSWORD).await;
    let (_, body) = server
        .get_as(&token, &format!("/v1/auth/validate_user?username={ADMIN}"))
        .await;
    assert_eq!(body["data"], json!("True"));
    let (_, body) = server
        .get_as(&token, "/v1/auth/validate_user?username=nobody")
        .await;
    assert_eq!(body["data"], json!("False"));
    let path = format!(
        "/v1/auth/validate_user_and_password?username={ADMIN}&password={}",
        common::ADMIN_PASSWORD
    );
    assert_eq!(server.get_as(&token, &path).await.1["data"], json!("True"));
    let path = format!("/v1/auth/validate_user_and_password?username={ADMIN}&password=nope");
    assert_eq!(server.get_as(&token, &path).await.1["data"], json!("False"));
    for probe in ["/health", "/ready"] {
        let status = server
            .client
            .get(server.url(probe))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "{probe}");
    }
    let home = server
        .client
        .get(server.url("/v1/home"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        home.starts_with("Welcome to the SMARTSolar API: "),
        "{home}"
    );
}

async fn bad_input_gets_clear_400s(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.max_body_bytes = 4096).await;
    let post = |body: &'static str| {
        server
            .client
            .post(server.url("/v1/action_types"))
            .header("Authorization", format!("Token token={}", server.token))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let r = post("{\"name\": ").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Json = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("Malformed JSON"),
        "{body}"
    );
    let cases: Vec<(Json, &str, &str)> = vec![
        (
            json!({"name": "a", "label": "a", "colour": "red"}),
            "colour",
            "unknown field",
        ),
        (
            json!({"name": 5, "label": "a"}),
            "name",
            "must be of type string",
        ),
        (json!({"label": "a"}), "name", "is required"),
        (
            json!({"name": null, "label": "a"}),
            "name",
            "may not be null",
        ),
        (json!([1, 2]), "", "JSON object"),
    ];
    for (body, field, needle) in cases {
        let (s, answer) = server.post("/v1/action_types", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let text = answer.to_string();
        assert!(
            text.contains(needle) && text.contains(field),
            "{body}: {answer}"
        );
    }
    // Options, unique and foreign key violations name the field.
    let (s, answer) = server.post("/v1/users", json!({"username": "u@x", "password": "password-1", "permissions": "GOD", "user_product_visibility": "GLOBAL"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        answer["validation_errors"]["permissions"]
            .as_str()
            .unwrap()
            .contains("must be one of"),
        "{answer}"
    );
    assert_eq!(answer["status"], json!("validation-error"));
    server
        .post_created("/v1/action_types", json!({"name": "dup", "label": "dup"}))
        .await;
    let (s, answer) = server
        .post("/v1/action_types", json!({"name": "dup", "label": "other"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["validation_errors"]["name"]
            .as_str()
            .unwrap()
            .contains("unique"),
        "{answer}"
    );
    let (s, answer) = server
        .post(
            "/v1/action_type_product_type_linker",
            json!({"product_type_id": 999999, "action_type_id": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["validation_errors"]["product_type_id"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{answer}"
    );
    // Oversize body: 413 with the envelope.
    let big = format!("{{\"name\": \"{}\", \"label\": \"x\"}}", "x".repeat(10_000));
    let r = server
        .client
        .post(server.url("/v1/action_types"))
        .header("Authorization", format!("Token token={}", server.token))
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Json = r.json().await.unwrap();
    assert_eq!(body["status"], json!("error"));
    // Bad q: malformed, unknown field, unknown operator, missing val.
    for (q, needle) in [
        ("{not json", "q"),
        ("{\"filters\": [{\"name\": \"nope\", \"op\": \"eq\", \"val\": 1}]}", "nope"),
        ("{\"filters\": [{\"name\": \"name\", \"op\": \"eqq\", \"val\": 1}]}", "eqq"),
        ("{\"filters\": [{\"name\": \"name\", \"op\": \"==\"}]}", "val"),
        ("{\"filters\": [{\"name\": \"action_type_id\", \"op\": \"eq\", \"val\": \"x' OR 1=1 --\"}]}", "action_type_id"),
    ] {
        let (s, body) = server.get(&format!("/v1/action_types?q={}", common::urlencode(q))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert!(body["message"].as_str().unwrap().contains(needle), "{q}: {body}");
    }
    // Wrong id type in the path: 404, not 500.
    assert_eq!(
        server.get("/v1/action_types/abc").await.0,
        StatusCode::NOT_FOUND
    );
}

async fn reference_data_is_seeded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, body) = server.get("/v1/state_types?results_per_page=20").await;
    let names: Vec<&str> = body["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "NON_EXISTANT",
            "STORED",
            "SHIPPED",
            "ACTIVATING",
            "ACTIVATED",
            "MONITORED",
            "UNMONITORED",
            "IN_REPAIR_SYSTEM",
            "TERMINATED"
        ]
    );
    assert_eq!(
        server.get("/v1/entities/1").await.1["name"],
        json!("Unknown Entity")
    );
    for name in ["product-status", "product-alert", "dcm"] {
        assert_eq!(
            server.get(&format!("/v1/channels/{name}")).await.0,
            StatusCode::OK,
            "{name}"
        );
    }
    for (id, name) in [(43, "SIM"), (77, "BBOXX Hub 2 PCB (Hyena)")] {
        assert_eq!(
            server.get(&format!("/v1/part_types/{id}")).await.1["name"],
            json!(name)
        );
    }
    assert_eq!(
        server.get("/v1/product_types/7").await.1["name"],
        json!("BBOXX Hub 2")
    );
    // New rows get ids after the seeded ones on both backends.
    let (_, created) = server
        .post(
            "/v1/product_types",
            json!({"name": "Test Product Type", "erp_code": "XX0005"}),
        )
        .await;
    assert_eq!(created["product_type_id"], json!(11));
    // The OpenAPI document covers every table route.
    let doc = server.get_ok("/v1/openapi.json").await;
    for table in server.catalogue().tables() {
        for path in &table.paths {
            assert!(
                doc["paths"].get(format!("/v1{path}")).is_some(),
                "openapi lacks {path}"
            );
        }
    }
}
