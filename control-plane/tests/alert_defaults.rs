//! The default alert types seeded at start, on SQLite and PostgreSQL: one per rule with its
//! links, idempotent, never overwriting what an operator changed, and safe when two
//! processes start at once.

mod common;

use common::{Backend, TestServer};
use control_plane::alerts::defaults::{ensure_defaults, DEFAULTS};
use control_plane::alerts::rules::RuleKind;
use reqwest::StatusCode;
use sea_query::{Alias, Expr, Query};
use serde_json::{json, Value as Json};

both_backends!(
    a_fresh_database_gets_one_linked_active_type_per_rule,
    seeding_again_changes_nothing_an_operator_did,
    a_label_an_operator_already_uses_is_left_alone,
    two_processes_seeding_at_once_seed_each_default_once,
);

async fn alert_types(server: &TestServer) -> Vec<Json> {
    server.list_objects("/v1/alert_types", json!({})).await
}

async fn links(server: &TestServer, table: &str, id: i64) -> Vec<i64> {
    let (status, body) = server
        .list(
            &format!("/v1/{table}"),
            json!({"filters": [{"name": "alert_type_id", "op": "eq", "val": id}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let field = if table.contains("product") {
        "product_type_id"
    } else {
        "state_type_id"
    };
    let mut ids: Vec<i64> = body["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[field].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

fn find<'a>(types: &'a [Json], name: &str) -> &'a Json {
    types
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {types:?}"))
}

async fn a_fresh_database_gets_one_linked_active_type_per_rule(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert!(alert_types(&server).await.is_empty());
    let created = ensure_defaults(&server.state.db).await.unwrap();
    assert_eq!(created.len(), RuleKind::ALL.len(), "{created:?}");
    let types = alert_types(&server).await;
    assert_eq!(types.len(), RuleKind::ALL.len());
    for d in &DEFAULTS {
        let t = find(&types, d.rule.as_str());
        // The engine runs the rule the name names.
        assert_eq!(
            RuleKind::from_name(t["name"].as_str().unwrap()),
            Some(d.rule)
        );
        assert_eq!(t["active"], json!(true));
        assert_eq!(t["severity"], d.severity);
        assert_eq!(t["label"], d.label());
        let id = t["alert_type_id"].as_i64().unwrap();
        // Every product type of the reference data (4, 6, 7, 10).
        assert_eq!(
            links(&server, "alert_type_product_type_linker", id).await,
            [4, 6, 7, 10]
        );
        let mut states = d.state_types.to_vec();
        states.sort_unstable();
        assert_eq!(
            links(&server, "alert_type_state_type_linker", id).await,
            states
        );
    }
    // Intervals are stored as the spec's datetime offsets: five minutes for tamper.
    let tamper = find(&types, "tamper");
    assert!(
        tamper["analysis_frequency"]
            .as_str()
            .unwrap()
            .starts_with("1970-01-01T00:05:00"),
        "{tamper}"
    );
    // No tamper analysis of units still in the factory (STORED) or the warehouse.
    let id = tamper["alert_type_id"].as_i64().unwrap();
    assert_eq!(
        links(&server, "alert_type_state_type_linker", id).await,
        [5, 6]
    );
}

async fn seeding_again_changes_nothing_an_operator_did(backend: Backend) {
    let server = TestServer::start(backend).await;
    ensure_defaults(&server.state.db).await.unwrap();
    let types = alert_types(&server).await;
    let tamper = find(&types, "tamper")["alert_type_id"].as_i64().unwrap();
    let failed_mt = find(&types, "failed_mt")["alert_type_id"].as_i64().unwrap();

    // The operator tunes one default and deletes another with its links.
    server
        .put_ok(
            &format!("/v1/alert_types/{tamper}"),
            json!({"severity": "low", "active": false}),
        )
        .await;
    let mut tx = server.state.db.begin().await.unwrap();
    for table in [
        "alert_type_product_type_linker",
        "alert_type_state_type_linker",
        "alert_type",
    ] {
        tx.execute(
            &Query::delete()
                .from_table(Alias::new(table))
                .and_where(Expr::col(Alias::new("alert_type_id")).eq(failed_mt))
                .to_owned(),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    // Every later start seeds nothing and leaves both as the operator left them.
    for _ in 0..2 {
        assert!(ensure_defaults(&server.state.db).await.unwrap().is_empty());
    }
    let types = alert_types(&server).await;
    assert_eq!(types.len(), RuleKind::ALL.len() - 1);
    assert!(types.iter().all(|t| t["name"] != "failed_mt"));
    let t = find(&types, "tamper");
    assert_eq!(
        (t["severity"].clone(), t["active"].clone()),
        (json!("low"), json!(false))
    );
}

async fn a_label_an_operator_already_uses_is_left_alone(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server
        .post(
            "/v1/alert_types",
            json!({
                "name": "my tamper check", "version": 3, "status": "manual",
                "analysis_frequency": "1970-01-01T02:00:00.000000", "active": true,
                "label": "default:tamper"
            }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let created = ensure_defaults(&server.state.db).await.unwrap();
    assert_eq!(created.len(), RuleKind::ALL.len() - 1, "{created:?}");
    assert!(!created.contains(&"default:tamper".to_string()));
    let types = alert_types(&server).await;
    let mine = types
        .iter()
        .find(|t| t["label"] == "default:tamper")
        .unwrap();
    assert_eq!(mine["name"], "my tamper check");
    assert_eq!(mine["version"], 3);
}

async fn two_processes_seeding_at_once_seed_each_default_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (a, b) = tokio::join!(
        ensure_defaults(&server.state.db),
        ensure_defaults(&server.state.db)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), RuleKind::ALL.len(), "{a:?} {b:?}");
    assert_eq!(alert_types(&server).await.len(), RuleKind::ALL.len());
}
