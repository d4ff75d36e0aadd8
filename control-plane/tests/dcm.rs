//! Device credit management through real HTTP and through the service
//! functions the gateway calls, on SQLite and on PostgreSQL.

mod common;

use common::{link, Backend, TestServer};
use control_plane::catalogue::{Column, ColumnType};
use control_plane::dcm;
use control_plane::query::Visibility;
use reqwest::{Method, StatusCode};
use sea_query::{Alias, Expr, Query};
use serde_json::{json, Value as Json};

both_backends!(
    payment_command_rules,
    duplicate_transaction_id_changes_nothing,
    zero_command_blocks_until_final_balance,
    force_reset_voids_and_reports,
    balance_and_pending_payments_as_documented,
    permissions_and_entity_scope,
    concurrent_duplicates_accept_exactly_one,
    concurrent_bad_payments_never_remove_more_than_added,
    gateway_service_functions,
);

async fn dcm_product(server: &TestServer) -> String {
    server.seed_product(json!({"dcm_enabled_flag": true})).await
}

fn add<'s>(
    server: &'s TestServer,
    imei: &str,
    category: &str,
    value: i64,
    tx: &str,
) -> impl std::future::Future<Output = (StatusCode, Json)> + 's {
    let path = format!("/v1/products/{imei}/add_payment_command");
    let body = json!({"value": value, "category": category, "transaction_id": tx});
    async move { server.post(&path, body).await }
}

/// The unit's commands as the generic table shows them, oldest first.
async fn commands(server: &TestServer, imei: &str) -> Vec<Json> {
    server
        .unit_rows("/v1/payment_commands", imei, "payment_command_id")
        .await
}

async fn count(server: &TestServer, table: &str) -> i64 {
    server
        .state
        .db
        .fetch_i64(
            &Query::select()
                .expr(Expr::cust("COUNT(*)"))
                .from(Alias::new(table))
                .to_owned(),
        )
        .await
        .unwrap()
}

async fn payment_command_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = dcm_product(&server).await;
    // Value signs per category.
    for (category, value) in [
        ("payment", 0),
        ("payment", -5),
        ("bad-payment", 0),
        ("bad-payment", 5),
        ("zero-command", 1),
        ("zero-command", -1),
    ] {
        let (s, b) = add(
            &server,
            &imei,
            category,
            value,
            &format!("t-{category}-{value}"),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{category} {value}: {b}");
        assert!(b["validation_errors"]["value"].is_string(), "{b}");
    }
    let (s, b) = add(&server, &imei, "force-reset", 0, "t-fr").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["validation_errors"]["category"]
        .as_str()
        .unwrap()
        .contains("force_reset"));
    let (s, b) = add(&server, &imei, "gift", 5, "t-gift").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = server
        .post(
            &format!("/v1/products/{imei}/add_payment_command"),
            json!({"value": 1.5, "category": "payment"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["validation_errors"]["value"].is_string());
    assert!(b["validation_errors"]["transaction_id"].is_string());
    assert_eq!(count(&server, "payment_command").await, 0);

    // The spec's example: +10, then -20 is rejected, -5 accepted.
    let (s, b) = add(&server, &imei, "payment", 10, "p1").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["status"], "success");
    assert_eq!(
        b["message"],
        format!("new payment_command added to product #{imei}")
    );
    assert_eq!(b["data"], Json::Null);
    let (s, b) = add(&server, &imei, "bad-payment", -20, "b1").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["message"].is_string());
    let (s, _) = add(&server, &imei, "bad-payment", -5, "b2").await;
    assert_eq!(s, StatusCode::CREATED);
    // Removals add up: 5 more is fine, 1 more after that is not.
    let (s, _) = add(&server, &imei, "bad-payment", -5, "b3").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = add(&server, &imei, "bad-payment", -1, "b4").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let rows = commands(&server, &imei).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["category"], "payment");
    assert_eq!(rows[0]["status"], "pending");
    assert_eq!(rows[0]["void"], false);
    assert_eq!(rows[0]["transaction_id"], "p1");

    // Unknown products are 404; units without DCM are refused.
    let (s, _) = add(&server, "999999999999999", "payment", 1, "u1").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let plain = server
        .seed("product", json!({"dcm_enabled_flag": false}))
        .await;
    let (s, b) = add(&server, plain.as_str().unwrap(), "payment", 1, "u2").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["message"].as_str().unwrap().contains("not DCM enabled"),
        "{b}"
    );
}

async fn duplicate_transaction_id_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = dcm_product(&server).await;
    let other = dcm_product(&server).await;
    assert_eq!(
        add(&server, &imei, "payment", 10, "dup").await.0,
        StatusCode::CREATED
    );
    let before = commands(&server, &imei).await;
    for (unit, category, value) in [
        (&imei, "payment", 10),
        (&imei, "bad-payment", -1),
        (&other, "payment", 99),
    ] {
        let (s, b) = add(&server, unit, category, value, "dup").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        let message = b["validation_errors"]["transaction_id"].as_str().unwrap();
        assert!(message.contains("already been used"), "{message}");
    }
    let (s, _) = server
        .post(
            &format!("/v1/products/{imei}/force_reset"),
            json!({"transaction_id": "dup"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(commands(&server, &imei).await, before);
    assert!(commands(&server, &other).await.is_empty());
    assert_eq!(count(&server, "balance").await, 0);
}

async fn zero_command_blocks_until_final_balance(backend: Backend) {
    let server = TestServer::start(backend).await;
    let cat = &server.state.catalogue;
    let imei = dcm_product(&server).await;
    assert_eq!(
        add(&server, &imei, "payment", 100, "p1").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        add(&server, &imei, "bad-payment", -30, "b1").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        add(&server, &imei, "zero-command", 0, "z1").await.0,
        StatusCode::CREATED
    );
    // Nothing is accepted while the zero-command is unacknowledged.
    let (s, b) = add(&server, &imei, "payment", 5, "p2").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("zero-command"),
        "{b}"
    );
    let (s, _) = add(&server, &imei, "zero-command", 0, "z2").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The gateway hands the unit all three, then the FinalBalance arrives.
    let mut tx = server.state.db.begin().await.unwrap();
    let pending = dcm::pending_commands(&mut tx, &imei).await.unwrap();
    assert_eq!(
        pending.iter().map(|c| c.category).collect::<Vec<_>>(),
        [
            dcm::Category::Payment,
            dcm::Category::BadPayment,
            dcm::Category::ZeroCommand
        ]
    );
    let zero_id = pending[2].payment_command_id;
    let now = control_plane::values::now();
    let outcome = dcm::record_final_balance(&mut tx, cat, &imei, zero_id, 42, "gateway", now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(outcome.created);
    assert!(outcome.acknowledged, "the report confirms the zero-command");
    assert_eq!(outcome.final_balance.final_balance, 42);
    assert_eq!(outcome.final_balance.total_added, 70);
    assert_eq!(outcome.final_balance.zero_command_id, zero_id);
    let notification_id = outcome.notification_id.unwrap();

    let rows = commands(&server, &imei).await;
    assert_eq!(rows[0]["void"], true);
    assert_eq!(rows[1]["void"], true);
    assert_eq!(rows[2]["void"], false, "the zero-command itself stays");
    assert_eq!(rows[2]["status"], "acknowledged");
    let (s, fb) = server
        .list(
            "/v1/final_balances",
            json!({"filters": [{"name": "product_imei", "op": "eq", "val": imei}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fb["num_results"], 1);
    assert_eq!(fb["objects"][0]["final_balance"], 42);
    assert_eq!(fb["objects"][0]["zero_command_id"], zero_id);
    // Published on the dcm channel, in the same transaction.
    let payload = Column::computed("payload", ColumnType::Text);
    let row = server
        .state
        .db
        .fetch_optional(
            &Query::select()
                .column(Alias::new("payload"))
                .from(Alias::new("notification"))
                .and_where(Expr::col(Alias::new("notification_id")).eq(notification_id))
                .to_owned(),
            &[&payload],
        )
        .await
        .unwrap()
        .unwrap();
    let body: Json = serde_json::from_str(row["payload"].as_str().unwrap()).unwrap();
    assert_eq!(body["channel"], "dcm");
    assert_eq!(body["data"]["final_balance"], 42);
    assert_eq!(body["data"]["product_imei"], json!(imei));
    assert_eq!(body["data"]["zero_command_id"], zero_id);

    // A retried report changes nothing and publishes nothing.
    let mut tx = server.state.db.begin().await.unwrap();
    let again = dcm::record_final_balance(&mut tx, cat, &imei, zero_id, 7, "gateway", now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!again.created);
    assert!(!again.acknowledged, "and it is not confirmed twice");
    assert_eq!(again.final_balance.final_balance, 42);
    assert_eq!(again.notification_id, None);
    assert_eq!(count(&server, "notification").await, 1);
    assert_eq!(count(&server, "final_balance").await, 1);

    // A new cycle starts from zero: nothing to remove yet.
    let (s, _) = add(&server, &imei, "bad-payment", -1, "b2").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        add(&server, &imei, "payment", 5, "p3").await.0,
        StatusCode::CREATED
    );
    let (_, bal) = server
        .get(&format!("/v1/products/{imei}/balance_and_pending_payments"))
        .await;
    assert_eq!(bal["data"]["balance"], 0);
}

async fn force_reset_voids_and_reports(backend: Backend) {
    let server = TestServer::start(backend).await;
    let cat = &server.state.catalogue;
    let imei = dcm_product(&server).await;
    let path = format!("/v1/products/{imei}/force_reset");
    let reset = |tx: Option<&str>| {
        let body = match tx {
            Some(t) => json!({"transaction_id": t}),
            None => json!({}),
        };
        server.post(&path, body)
    };
    let (s, b) = reset(None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["validation_errors"]["transaction_id"].is_string());

    assert_eq!(
        add(&server, &imei, "payment", 100, "p1").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        add(&server, &imei, "payment", 250, "p2").await.0,
        StatusCode::CREATED
    );
    // The unit confirms the first with its balance of 58.
    let mut tx = server.state.db.begin().await.unwrap();
    let pending = dcm::pending_commands(&mut tx, &imei).await.unwrap();
    let now = control_plane::values::now();
    dcm::acknowledge(
        &mut tx,
        cat,
        &imei,
        pending[0].payment_command_id,
        Some(58),
        "gateway",
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        add(&server, &imei, "zero-command", 0, "z1").await.0,
        StatusCode::CREATED
    );

    let voided = r#"smartsolar_dcm_payment_command_events_total{event="voided"}"#;
    common::metrics();
    let voided_before = common::metric(voided);
    let (s, b) = reset(Some("r1")).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // The three earlier commands, counted after commit (the other backend's
    // test may count too, hence at least).
    assert!(
        common::metric(voided) >= voided_before + 3.0,
        "voids not counted"
    );
    assert_eq!(
        b,
        json!({"status": "success", "message": format!("Product #{imei} has been Force-Reset"),
               "data": {"outstanding_payments": 250, "last_known_balance": 58}})
    );
    let rows = commands(&server, &imei).await;
    assert_eq!(rows.len(), 4);
    assert!(rows[..3].iter().all(|r| r["void"] == true), "{rows:?}");
    assert_eq!(rows[3]["category"], "force-reset");
    assert_eq!(rows[3]["value"], 0);
    assert_eq!(rows[3]["void"], false);
    // The zero-command no longer blocks; the balance is zero.
    let (_, bal) = server
        .get(&format!("/v1/products/{imei}/balance_and_pending_payments"))
        .await;
    assert_eq!(bal["data"]["balance"], 0);
    let pending = &bal["data"]["pending_payment_commands"];
    assert_eq!(pending.as_array().unwrap().len(), 1, "{bal}");
    assert_eq!(pending[0]["category"], "force-reset");
    assert_eq!(
        add(&server, &imei, "payment", 5, "p3").await.0,
        StatusCode::CREATED
    );
    // A duplicate reset is refused and changes nothing.
    let (s, _) = reset(Some("r1")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(commands(&server, &imei).await.len(), 5);

    // The zero-command's late FinalBalance is kept but not published: the
    // reset already returned that credit.
    let zero_id = rows[2]["payment_command_id"].as_i64().unwrap();
    let mut tx = server.state.db.begin().await.unwrap();
    let late = dcm::record_final_balance(&mut tx, cat, &imei, zero_id, 58, "gateway", now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(late.notification_id, None);
    assert_eq!(late.final_balance.status.as_deref(), Some("superseded"));
    assert_eq!(count(&server, "notification").await, 0);

    // A unit never heard from: nothing outstanding, no known balance.
    let fresh = dcm_product(&server).await;
    let b = server
        .post_created(
            &format!("/v1/products/{fresh}/force_reset"),
            json!({"transaction_id": "r2"}),
        )
        .await;
    assert_eq!(
        b["data"],
        json!({"outstanding_payments": 0, "last_known_balance": null})
    );
}

async fn balance_and_pending_payments_as_documented(backend: Backend) {
    let server = TestServer::start(backend).await;
    let cat = &server.state.catalogue;
    let imei = dcm_product(&server).await;
    let path = format!("/v1/products/{imei}/balance_and_pending_payments");
    let b = server.get_ok(&path).await;
    assert_eq!(
        b,
        json!({"status": "success", "message": "Balance and pending credits.",
               "data": {"balance": null, "expected_expiry": null, "pending_payment_commands": []}})
    );
    assert_eq!(
        add(&server, &imei, "payment", 2592000, "p1").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        add(&server, &imei, "payment", 60, "p2").await.0,
        StatusCode::CREATED
    );
    let mut tx = server.state.db.begin().await.unwrap();
    let at = control_plane::values::parse_datetime("2020-11-06T07:07:45.796359").unwrap();
    dcm::record_balance(&mut tx, cat, &imei, 432000, "gateway", at)
        .await
        .unwrap();
    // An older report arriving late does not replace it.
    let older = control_plane::values::parse_datetime("2020-11-05T00:00:00").unwrap();
    dcm::record_balance(&mut tx, cat, &imei, 5, "gateway", older)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let b = server.get_ok(&path).await;
    let data = &b["data"];
    assert_eq!(data["balance"], 432000);
    assert_eq!(data["expected_expiry"], "2020-11-11T07:07:45.796359");
    let pending = data["pending_payment_commands"].as_array().unwrap();
    assert_eq!(pending.len(), 2);
    // Newest first, with exactly the documented keys.
    assert_eq!(pending[0]["value"], 60);
    assert_eq!(pending[1]["value"], 2592000);
    let mut keys: Vec<&str> = pending[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["category", "created_at", "modified_at", "value"]);
    // The generic balance table has one row per unit.
    let (_, list) = server
        .list(
            "/v1/balances",
            json!({"filters": [{"name": "product_imei", "op": "eq", "val": imei}]}),
        )
        .await;
    assert_eq!(list["num_results"], 1);
    assert_eq!(list["objects"][0]["balance"], 432000);
    assert_eq!(
        server
            .get("/v1/products/999999999999999/balance_and_pending_payments")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

async fn permissions_and_entity_scope(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mine = dcm_product(&server).await;
    let theirs = dcm_product(&server).await;
    let entity = server.seed("entity", json!({})).await.as_i64().unwrap();
    let other_entity = server.seed("entity", json!({})).await.as_i64().unwrap();
    link(&server, &mine, entity).await;
    link(&server, &theirs, other_entity).await;
    let viewer = server
        .user("viewer@example.com", "OVERVIEW", "GLOBAL", None)
        .await;
    let tech = server
        .user("tech@example.com", "TECHNICAL", "ENTITY", Some(entity))
        .await;
    let body = |t: &str| Some(json!({"value": 10, "category": "payment", "transaction_id": t}));
    let (s, _) = server
        .call_as(
            &viewer,
            Method::POST,
            &format!("/v1/products/{mine}/add_payment_command"),
            body("v1"),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = server
        .post_as(
            &viewer,
            &format!("/v1/products/{mine}/force_reset"),
            json!({"transaction_id": "v2"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = server
        .get_as(
            &viewer,
            &format!("/v1/products/{mine}/balance_and_pending_payments"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // An ENTITY user acts on its own entity's units only; others are 404.
    let (s, b) = server
        .call_as(
            &tech,
            Method::POST,
            &format!("/v1/products/{mine}/add_payment_command"),
            body("t1"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    for path in [
        format!("/v1/products/{theirs}/add_payment_command"),
        format!("/v1/products/{theirs}/force_reset"),
    ] {
        let (s, _) = server.call_as(&tech, Method::POST, &path, body("t2")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, _) = server
        .get_as(
            &tech,
            &format!("/v1/products/{theirs}/balance_and_pending_payments"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(commands(&server, &theirs).await.is_empty());
    // The command is recorded as made by its user.
    let (_, rows) = server
        .list(
            "/v1/payment_commands",
            json!({"filters": [{"name": "transaction_id", "op": "eq", "val": "t1"}]}),
        )
        .await;
    assert_eq!(rows["objects"][0]["created_by"], "tech@example.com");
}

async fn concurrent_duplicates_accept_exactly_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = dcm_product(&server).await;
    let b = dcm_product(&server).await;
    for round in 0..3 {
        let tx = format!("race-{round}");
        let mut calls = Vec::new();
        for i in 0..8 {
            // Half on another unit: the UNIQUE index settles those.
            let unit = if i % 2 == 0 { a.clone() } else { b.clone() };
            calls.push(add(&server, &unit, "payment", 10, &tx));
        }
        let results = futures_util::future::join_all(calls).await;
        let created = results
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count();
        assert_eq!(created, 1, "round {round}: {results:?}");
        for (s, body) in &results {
            assert!(
                *s == StatusCode::CREATED || *s == StatusCode::BAD_REQUEST,
                "{s}: {body}"
            );
        }
    }
    assert_eq!(count(&server, "payment_command").await, 3);
}

async fn concurrent_bad_payments_never_remove_more_than_added(backend: Backend) {
    let server = TestServer::start(backend).await;
    let imei = dcm_product(&server).await;
    assert_eq!(
        add(&server, &imei, "payment", 10, "p").await.0,
        StatusCode::CREATED
    );
    let calls: Vec<_> = (0..12)
        .map(|i| add(&server, &imei, "bad-payment", -3, &format!("b{i}")))
        .collect();
    let results = futures_util::future::join_all(calls).await;
    let accepted = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(accepted, 3, "{results:?}");
    let removed: i64 = commands(&server, &imei)
        .await
        .iter()
        .filter(|c| c["category"] == "bad-payment")
        .map(|c| -c["value"].as_i64().unwrap())
        .sum();
    assert_eq!(removed, 9);
}

async fn gateway_service_functions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let cat = &server.state.catalogue;
    let imei = dcm_product(&server).await;
    let other = dcm_product(&server).await;
    let now = control_plane::values::now();
    let mut tx = server.state.db.begin().await.unwrap();
    let first = dcm::add_payment_command(
        &mut tx,
        cat,
        &imei,
        &dcm::NewCommand {
            category: dcm::Category::Payment,
            value: 3600,
            transaction_id: "g1".into(),
        },
        "billing",
        &Visibility::Global,
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = server.state.db.begin().await.unwrap();
    assert_eq!(
        dcm::pending_commands(&mut tx, &imei).await.unwrap(),
        vec![first.clone()]
    );
    let acked = dcm::acknowledge(
        &mut tx,
        cat,
        &imei,
        first.payment_command_id,
        Some(3600),
        "gateway",
        now,
    )
    .await
    .unwrap();
    assert!(acked.command.is_acknowledged());
    assert!(acked.newly);
    // Acknowledging twice is harmless (and not counted again); another unit cannot
    // acknowledge it.
    let again = dcm::acknowledge(
        &mut tx,
        cat,
        &imei,
        first.payment_command_id,
        None,
        "gateway",
        now,
    )
    .await
    .unwrap();
    assert!(!again.newly);
    let err = dcm::acknowledge(
        &mut tx,
        cat,
        &other,
        first.payment_command_id,
        None,
        "gateway",
        now,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, dcm::DcmError::UnknownCommand { .. }), "{err}");
    assert!(dcm::pending_commands(&mut tx, &imei)
        .await
        .unwrap()
        .is_empty());
    let balance = dcm::balance(&mut tx, &imei).await.unwrap().unwrap();
    assert_eq!(balance.balance, 3600);
    assert_eq!(
        balance.expected_expiry,
        now + chrono::Duration::seconds(3600)
    );
    assert!(matches!(
        dcm::record_balance(&mut tx, cat, &imei, -1, "gateway", now).await,
        Err(dcm::DcmError::NegativeBalance(-1))
    ));
    let ledger = dcm::ledger(&mut tx, &imei).await.unwrap();
    assert_eq!(
        ledger,
        dcm::Ledger {
            added: 3600,
            removed: 0,
            outstanding: 0,
            pending_zero_command: None
        }
    );
    // A final balance must name a zero-command of this unit.
    assert!(matches!(
        dcm::record_final_balance(
            &mut tx,
            cat,
            &imei,
            first.payment_command_id,
            1,
            "gateway",
            now
        )
        .await,
        Err(dcm::DcmError::NotZeroCommand(_))
    ));
    tx.commit().await.unwrap();
}
