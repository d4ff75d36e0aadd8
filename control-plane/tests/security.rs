//! Issue 17: nobody reads, writes or crashes what they must not. Real
//! server, real HTTP, on SQLite and on PostgreSQL.
//!
//! The scope test is generated from the catalogue: for every table it seeds
//! a row owned by entity A and one owned by entity B (following the table's
//! scope declaration), then walks every table, every relation and every
//! parameterised route of the OpenAPI document as an ENTITY user of A.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use common::{link, Backend, TestServer, ADMIN, ADMIN_PASSWORD};
use control_plane::catalogue::{Permission, ProductScope, Table};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value as Json};

both_backends!(
    entity_user_sees_nothing_of_another_entity,
    credentials_are_hidden_below_factory,
    every_table_a_query_touches_is_checked,
    payment_values_are_bounded,
    data_api_rejects_times_that_used_to_panic,
    login_throttle_is_per_address_and_username,
);

/// The rows one entity owns, by table: each table's primary key value.
type Owned = HashMap<String, Json>;

/// Seeds (once) a row of `table` owned by `entity` through `imei`, as the
/// table's scope declaration says rows belong to an entity; `None` for
/// global reference tables, which belong to no one.
async fn own(
    server: &TestServer,
    table: &Table,
    entity: i64,
    imei: &str,
    owned: &mut Owned,
) -> Option<Json> {
    if let Some(pk) = owned.get(&table.name) {
        return Some(pk.clone());
    }
    let pk = match &table.scope {
        ProductScope::Unscoped => return None,
        ProductScope::Column(c) if table.name == "product" => {
            assert_eq!(c, "product_imei");
            json!(imei)
        }
        ProductScope::Column(c) => server.seed(&table.name, json!({ c: imei })).await,
        ProductScope::Entity(_) if table.name == "entity" => json!(entity),
        ProductScope::Entity(c) => server.seed(&table.name, json!({ c: entity })).await,
        ProductScope::Via { column, table: t } => {
            let target = server.catalogue().table(t).unwrap().clone();
            let parent = Box::pin(own(server, &target, entity, imei, owned))
                .await
                .expect("a via scope points at a scoped table");
            server.seed(&table.name, json!({ column: parent })).await
        }
        ProductScope::Linked {
            table: linker,
            column,
            imei_column,
        } => {
            let part = server.seed(&table.name, json!({})).await;
            server
                .seed(linker, json!({ column: part, imei_column: imei }))
                .await;
            part
        }
        // Refused to ENTITY users: a row still exists, to prove it stays unseen.
        ProductScope::Refused => server.seed(&table.name, json!({})).await,
    };
    owned.insert(table.name.clone(), pk.clone());
    Some(pk)
}

/// An entity with one product linked to it.
async fn entity_with_product(server: &TestServer, name: &str) -> (i64, String) {
    let entity = server.seed_entity(name).await;
    let imei = server
        .seed_product(json!({"device_key": format!("key-of-{name}")}))
        .await;
    link(server, &imei, entity).await;
    (entity, imei)
}

fn id_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn entity_user_sees_nothing_of_another_entity(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (a, imei_a) = entity_with_product(&server, "Entity A").await;
    let (b, imei_b) = entity_with_product(&server, "Entity B").await;
    let tables = server.catalogue().tables().to_vec();
    let (mut mine, mut theirs) = (Owned::new(), Owned::new());
    for t in &tables {
        own(&server, t, a, &imei_a, &mut mine).await;
        own(&server, t, b, &imei_b, &mut theirs).await;
    }
    // The strongest ENTITY user: every table's level, only the scope limits it.
    let token = server
        .user("system@a.example", "SYSTEM", "ENTITY", Some(a))
        .await;
    let mut checked_tables = 0;
    let mut checked_relations = 0;
    for t in &tables {
        let (Some(path), Some(_)) = (t.paths.first(), t.permission_for("GET")) else {
            continue;
        };
        let pk = &t.primary_key().name;
        let refused = t.scope == ProductScope::Refused;
        if let Some(their_pk) = theirs.get(&t.name) {
            // Listed with a filter on B's row: nothing (or 403 for refused tables).
            let q = json!({"filters": [{"name": pk, "op": "eq", "val": their_pk}]});
            let (s, body) = server.list_as(&token, &format!("/v1{path}"), q).await;
            if refused {
                assert_eq!(s, StatusCode::FORBIDDEN, "{} list: {body}", t.name);
                assert!(body["message"].as_str().unwrap().contains(&t.name));
            } else {
                assert_eq!(s, StatusCode::OK, "{} list: {body}", t.name);
                assert_eq!(body["num_results"], json!(0), "{} leaks B: {body}", t.name);
            }
            // The whole list never holds B's row either.
            let (_, body) = server
                .get_as(&token, &format!("/v1{path}?results_per_page=1000"))
                .await;
            let text = body.to_string();
            if let Some(objects) = body["objects"].as_array() {
                assert!(
                    !objects.iter().any(|o| o[pk] == *their_pk),
                    "{} lists B's row: {text}",
                    t.name
                );
            }
            // B's row by id: 404 as if it did not exist (403 for refused tables).
            let (s, body) = server
                .get_as(&token, &format!("/v1{path}/{}", id_text(their_pk)))
                .await;
            let expected = if refused {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(s, expected, "{} GET B's row: {body}", t.name);
            // A's own row is visible: the test is not vacuous.
            if !refused {
                let my_pk = &mine[&t.name];
                let (s, body) = server
                    .get_as(&token, &format!("/v1{path}/{}", id_text(my_pk)))
                    .await;
                assert_eq!(s, StatusCode::OK, "{} GET A's row: {body}", t.name);
            }
            checked_tables += 1;
        }
        if refused {
            continue;
        }
        // Filters through every relation never match B's related row.
        for r in &t.relations {
            let target = server.catalogue().table(&r.target).unwrap();
            let Some(their_pk) = theirs.get(&target.name) else {
                continue;
            };
            let name = format!("{}__{}", r.name, target.primary_key().name);
            let q = json!({"filters": [{"name": name, "op": "eq", "val": their_pk}]});
            let (s, body) = server.list_as(&token, &format!("/v1{path}"), q).await;
            if target.scope == ProductScope::Refused || target.permission_for("GET").is_none() {
                assert_eq!(s, StatusCode::FORBIDDEN, "{} via {name}: {body}", t.name);
            } else {
                assert_eq!(s, StatusCode::OK, "{} via {name}: {body}", t.name);
                assert_eq!(
                    body["num_results"],
                    json!(0),
                    "{} reveals B's {} through {name}: {body}",
                    t.name,
                    target.name
                );
            }
            checked_relations += 1;
        }
    }
    assert!(checked_tables > 40, "only {checked_tables} tables checked");
    assert!(
        checked_relations > 100,
        "only {checked_relations} relations checked"
    );

    // dashboard2: A's product only, and B's cannot be filtered for.
    let (s, body) = server
        .get_as(&token, "/v1/dashboard2?results_per_page=100")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let text = body.to_string();
    assert!(text.contains(&imei_a) && !text.contains(&imei_b), "{text}");

    // Every parameterised route of the OpenAPI document, aimed at B's rows.
    let doc = server.get_ok("/v1/openapi.json").await;
    let mut routes = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let Some(rest) = path.strip_prefix("/v1/") else {
            continue;
        };
        let Some((segment, after)) = rest.split_once("/{") else {
            continue;
        };
        // The row of B the route's first parameter addresses.
        let id = if segment == "products" {
            json!(imei_b)
        } else {
            let owner = tables
                .iter()
                .find(|t| t.paths.iter().any(|p| p == &format!("/{segment}")));
            match owner.and_then(|t| theirs.get(&t.name)) {
                Some(pk) => pk.clone(),
                None => continue,
            }
        };
        let Some((_, tail)) = after.split_once('}') else {
            continue;
        };
        if tail.contains('{') {
            continue; // a second parameter (e.g. a delivery id) of B's row is not known here
        }
        let url = format!("/v1/{segment}/{}{tail}", id_text(&id));
        for method in ops.as_object().unwrap().keys() {
            let m: Method = method.to_uppercase().parse().unwrap();
            let body = (m != Method::GET).then(|| json!({}));
            let (s, answer) = server.call_as(&token, m.clone(), &url, body).await;
            assert!(
                !s.is_success() && !s.is_server_error(),
                "{m} {url} answered {s}: {answer}"
            );
            // A 400 about the request's own arguments (checked before the row is
            // looked up) says nothing about B's row as long as it does not name it.
            let about_the_row = answer.to_string().contains(&id_text(&id));
            assert!(
                s == StatusCode::NOT_FOUND
                    || s == StatusCode::FORBIDDEN
                    || s == StatusCode::METHOD_NOT_ALLOWED
                    || (s == StatusCode::BAD_REQUEST && !about_the_row),
                "{m} {url} answered {s}: {answer}"
            );
            routes += 1;
        }
    }
    assert!(routes > 30, "only {routes} routes checked");
    let _ = b;
}

async fn credentials_are_hidden_below_factory(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, imei) = entity_with_product(&server, "Keys Ltd").await;
    let key = "key-of-Keys Ltd";
    let overview = server
        .user("callcentre@example.com", "OVERVIEW", "GLOBAL", None)
        .await;
    let admin = server
        .user("admin2@example.com", "ADMIN", "GLOBAL", None)
        .await;
    let factory = server
        .user("factory@example.com", "FACTORY", "GLOBAL", None)
        .await;
    for token in [&overview, &admin] {
        for path in [
            "/v1/products".to_string(),
            format!("/v1/products/{imei}"),
            "/v1/dashboard2".to_string(),
        ] {
            let (s, body) = server.get_as(token, &path).await;
            assert_eq!(s, StatusCode::OK, "{path}: {body}");
            let text = body.to_string();
            assert!(
                !text.contains("device_key") && !text.contains(key),
                "{path}: {text}"
            );
        }
        for q in [
            json!({"filters": [{"name": "device_key", "op": "like", "val": "key%"}]}),
            json!({"order_by": [{"field": "device_key"}]}),
            json!({"group_by": [{"field": "device_key"}]}),
            json!({"filters": [{"name": "product__device_key", "op": "eq", "val": key}]}),
            json!({"filters": [{"name": "product_imei", "op": "eq", "field": "device_key"}]}),
        ] {
            let table = if q.to_string().contains("product__") {
                "/v1/product_notes"
            } else {
                "/v1/products"
            };
            let (s, body) = server.list_as(token, table, q.clone()).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{q}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains("device_key") && message.contains("FACTORY"),
                "{message}"
            );
        }
        let (s, body) = server
            .list_as(
                token,
                "/v1/dashboard2",
                json!({"filters": [{"name": "device_key", "op": "is_not_null"}]}),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    }
    // FACTORY provisions units: it reads and filters the key.
    let (s, body) = server
        .get_as(&factory, &format!("/v1/products/{imei}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["device_key"], json!(key));
    let q = json!({"filters": [{"name": "device_key", "op": "eq", "val": key}]});
    let (s, body) = server.list_as(&factory, "/v1/products", q).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["num_results"], json!(1), "{body}");
    assert_eq!(body["objects"][0]["device_key"], json!(key));
}

async fn every_table_a_query_touches_is_checked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (entity, _) = entity_with_product(&server, "Probe Ltd").await;
    let _ = entity;
    let overview = server
        .user("probe@example.com", "OVERVIEW", "GLOBAL", None)
        .await;
    // The probe: usernames through a relation to the SYSTEM-only user table.
    let probes = [
        (
            "/v1/entities",
            json!({"filters": [{"name": "user__username", "op": "like", "val": "a%"}]}),
        ),
        (
            "/v1/entities",
            json!({"filters": [{"name": "user", "op": "any", "val": {"name": "permissions", "op": "eq", "val": "SYSTEM"}}]}),
        ),
        (
            "/v1/entities",
            json!({"filters": [{"name": "user", "op": "has", "val": 1}]}),
        ),
        (
            "/v1/hubs",
            json!({"order_by": [{"field": "entity__name"}], "filters": [{"name": "user__username", "op": "is_not_null"}]}),
        ),
        (
            "/v1/shops",
            json!({"filters": [{"name": "hub__user__username", "op": "eq", "val": ADMIN}]}),
        ),
        (
            "/v1/shops",
            json!({"filters": [{"name": "hub", "op": "has", "val": {"name": "user__username", "op": "eq", "val": ADMIN}}]}),
        ),
        // A table no one reads through the API (no GET documented).
        (
            "/v1/products",
            json!({"filters": [{"name": "rtc_fallback_message_history__message_sent_time", "op": "is_not_null"}]}),
        ),
    ];
    for (path, q) in probes {
        let (s, body) = server.list_as(&overview, path, q.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path} {q}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("'user'") || message.contains("'rtc_fallback_message_history'"),
            "names the table: {message}"
        );
    }
    // group_by and order_by through a forbidden table.
    let (s, body) = server
        .list_as(
            &overview,
            "/v1/entities",
            json!({"group_by": [{"field": "user__username"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = server
        .list_as(
            &overview,
            "/v1/hubs",
            json!({"order_by": [{"field": "user__username"}]}),
        )
        .await;
    // user -> hub is to-many from hub, refused for the table before the path shape.
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // The same query by SYSTEM works: the refusal is about the level.
    let (s, body) = server
        .list(
            "/v1/entities",
            json!({"filters": [{"name": "user__username", "op": "like", "val": "a%"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let _ = Permission::System;
}

async fn payment_values_are_bounded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = server.seed_product(json!({"dcm_enabled_flag": true})).await;
    let add = |value: i64, category: &str, tx: &str| {
        let path = format!("/v1/products/{imei}/add_payment_command");
        let body = json!({"value": value, "category": category, "transaction_id": tx});
        let server = &server;
        async move { server.post(&path, body).await }
    };
    let max = control_plane::dcm::MAX_CREDIT_SECONDS;
    for (value, category) in [
        (i64::MIN, "bad-payment"),
        (-max - 1, "bad-payment"),
        (max + 1, "payment"),
        (i64::MAX, "payment"),
    ] {
        let (s, body) = add(value, category, &format!("tx-{value}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{value}: {body}");
        let text = body.to_string();
        assert!(
            text.contains(&max.to_string()) && text.contains("MAX_CREDIT_SECONDS"),
            "{text}"
        );
    }
    let (s, body) = add(max, "payment", "tx-max").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = add(max, "payment", "tx-max-2").await;
    assert_eq!(s, StatusCode::CREATED, "sums stay in range: {body}");
    let (s, body) = add(-max, "bad-payment", "tx-min").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = server
        .list(
            "/v1/payment_commands",
            json!({"filters": [{"name": "product_imei", "op": "eq", "val": imei}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body["num_results"],
        json!(3),
        "nothing out of range was stored: {body}"
    );
}

async fn data_api_rejects_times_that_used_to_panic(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = server.seed("product", json!({})).await;
    let imei = imei.as_str().unwrap();
    let url = format!(
        "/v1/products/{imei}/data?start=-9223372036854&end=2026-01-01T00:00:00&ds_interval=1m&ds_function=mean&fields=voltage"
    );
    let (s, body) = server.get(&url).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("start"),
        "{body}"
    );
    // The server is still answering.
    server.get_ok("/v1/whoami").await;
}

/// A client bound to one loopback address (the whole 127/8 is local on Linux).
fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .build()
        .unwrap()
}

async fn login_from(server: &TestServer, client: &reqwest::Client, password: &str) -> StatusCode {
    client
        .post(server.url("/v1/auth/login"))
        .form(&[("username", ADMIN), ("password", password)])
        .send()
        .await
        .unwrap()
        .status()
}

async fn login_throttle_is_per_address_and_username(backend: Backend) {
    let server = TestServer::start(backend).await;
    let max = server.state.config.login_max_failures;
    let stranger = client_from(2);
    for _ in 0..max {
        assert_eq!(
            login_from(&server, &stranger, "guess").await,
            StatusCode::UNAUTHORIZED
        );
    }
    // The stranger is stopped, even with the right password...
    assert_eq!(
        login_from(&server, &stranger, ADMIN_PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...but the administrator, from another address, is not locked out.
    let owner = client_from(3);
    assert_eq!(
        login_from(&server, &owner, ADMIN_PASSWORD).await,
        StatusCode::OK
    );
    // Spraying many usernames from one address is stopped too.
    let sprayer = client_from(4);
    let mut refused = false;
    for i in 0..(max * control_plane::auth::ADDRESS_FAILURE_FACTOR + 1) {
        let s = sprayer
            .post(server.url("/v1/auth/login"))
            .form(&[
                ("username", format!("user{i}@example.com")),
                ("password", "guess".into()),
            ])
            .send()
            .await
            .unwrap()
            .status();
        if s == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert!(refused, "an address spraying usernames is throttled");
}
