//! get_repair: the unit's open repair, or a new one in the workflow the
//! `repair_workflow_selector` rules (or the product type's default) choose.

use sea_query::{Expr, Order, Query, SelectStatement};
use serde_json::json;

use super::reads::{outside_repair_system, select_product, ProductRow};
use super::steps::{enter_state, point_at_event, record_event};
use super::{insert, internal, Call, Conn, Found};
use crate::db::{Db, Tx};
use crate::error::ApiError;
use crate::query::scope_condition;
use crate::repairs::definition::Workflow;
use crate::rows::{a, c};

/// The unit's open repair, created on the first call (spec: get_repair).
pub async fn get_repair(call: &Call<'_>, imei: &str) -> Result<Found, ApiError> {
    let cat = &call.app.catalogue;
    let db = &call.app.db;
    let product = cat.table("product").expect("product is in the catalogue");
    let mut stmt = select_product(imei);
    if let Some(scope) = scope_condition(cat, product, &call.user.visibility) {
        stmt.and_where(scope);
    }
    let product: ProductRow = Conn::Db(db)
        .fetch_typed_optional(&stmt)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Product {imei} not found")))?;
    let product_type_id = product.product_type_id;
    if let Some(now) = outside_repair_system(&mut Conn::Db(db), product.latest_state_id).await? {
        return Err(ApiError::BadRequest(format!(
            "Product {imei} is not in state IN_REPAIR_SYSTEM (it is in {now}); a repair can only be started for a unit in IN_REPAIR_SYSTEM"
        )));
    }
    if let Some(found) = open_repair(call, imei, product_type_id).await? {
        return Ok(found);
    }
    let wf = select_workflow(call, imei, product_type_id).await?;
    let mut tx = db.begin().await?;
    let created = insert_repair(call, &mut tx, imei, wf).await;
    match created {
        Ok(id) => {
            tx.commit().await?;
            Ok(Found {
                repair_id: id,
                config: wf.config_for(product_type_id).cloned(),
                created: true,
            })
        }
        // A concurrent first call created it: answer with that one.
        Err(ApiError::Validation(_)) => {
            drop(tx);
            open_repair(call, imei, product_type_id)
                .await?
                .ok_or_else(|| internal(format!("repair for {imei} vanished")))
        }
        Err(e) => Err(e),
    }
}

/// The open repair of a unit (at most one: a unique index says so).
#[derive(Debug, sqlx::FromRow)]
struct OpenRepair {
    repair_id: i64,
    workflow_name: Option<String>,
}

async fn open_repair(
    call: &Call<'_>,
    imei: &str,
    product_type_id: i64,
) -> Result<Option<Found>, ApiError> {
    let stmt = Query::select()
        .expr(c("repair", "repair_id"))
        .expr(c("repair", "workflow_name"))
        .from(a("repair"))
        .and_where(c("repair", "product_imei").eq(imei))
        .and_where(c("repair", "outcome").is_null())
        .order_by((a("repair"), a("repair_id")), Order::Desc)
        .limit(1)
        .to_owned();
    let open: Option<OpenRepair> = Conn::Db(&call.app.db).fetch_typed_optional(&stmt).await?;
    Ok(open.map(|r| Found {
        repair_id: r.repair_id,
        config: r
            .workflow_name
            .and_then(|n| call.workflows.get(&n))
            .and_then(|wf| wf.config_for(product_type_id))
            .cloned(),
        created: false,
    }))
}

/// A `repair_workflow_selector` rule (both text columns are `NOT NULL`; a
/// rule without `workflow_name` forbids).
#[derive(Debug, sqlx::FromRow)]
struct SelectorRule {
    repair_workflow_selector_id: i64,
    workflow_name: Option<String>,
    selector_type: String,
    selector_value: String,
}

/// The workflow for a new repair: a `repair_workflow_selector` rule of the
/// product type matching the user (USER, by username), else one matching
/// the GEIC of the user's entity, else of the unit's entity (ENTITY); else
/// the product type's default workflow. A matching rule without a
/// workflow name forbids the repair (403).
async fn select_workflow<'w>(
    call: &Call<'w>,
    imei: &str,
    product_type_id: i64,
) -> Result<&'w Workflow, ApiError> {
    let db = &call.app.db;
    let stmt = Query::select()
        .columns(
            [
                "repair_workflow_selector_id",
                "workflow_name",
                "selector_type",
                "selector_value",
            ]
            .map(a),
        )
        .from(a("repair_workflow_selector"))
        .and_where(Expr::col(a("product_type_id")).eq(product_type_id))
        .order_by(a("repair_workflow_selector_id"), Order::Asc)
        .to_owned();
    let rules: Vec<SelectorRule> = db.fetch_typed(&stmt).await?;
    let mut candidates: Vec<(&str, String)> = vec![("USER", call.user.username.to_lowercase())];
    if let Some(geic) = user_entity_geic(db, call.user.entity_id).await? {
        candidates.push(("ENTITY", geic));
    }
    if let Some(geic) = product_entity_geic(db, imei).await? {
        candidates.push(("ENTITY", geic));
    }
    for (kind, value) in &candidates {
        let rule = rules.iter().find(|r| {
            r.selector_type == *kind
                && if *kind == "USER" {
                    r.selector_value.to_lowercase() == *value
                } else {
                    r.selector_value == *value
                }
        });
        if let Some(rule) = rule {
            let id = rule.repair_workflow_selector_id;
            return match &rule.workflow_name {
                None => Err(ApiError::Forbidden(format!(
                    "repair_workflow_selector {id} forbids repairs of product type {product_type_id} for this {}",
                    if *kind == "USER" { "user" } else { "entity" }
                ))),
                Some(name) => call.workflows.get(name).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "repair_workflow_selector {id} names workflow '{name}', which does not exist"
                    ))
                }),
            };
        }
    }
    call.workflows.default_for(product_type_id).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "No repair workflow is available for product type {product_type_id}"
        ))
    })
}

/// An entity's GEIC (`entity.geic` may be NULL).
#[derive(Debug, sqlx::FromRow)]
struct EntityGeic {
    geic: Option<String>,
}

/// The GEIC of the first row of a select of `entity.geic`.
async fn first_geic(db: &Db, stmt: &SelectStatement) -> Result<Option<String>, ApiError> {
    let row: Option<EntityGeic> = Conn::Db(db).fetch_typed_optional(stmt).await?;
    Ok(row.and_then(|r| r.geic))
}

async fn user_entity_geic(db: &Db, entity_id: Option<i64>) -> Result<Option<String>, ApiError> {
    let Some(entity_id) = entity_id else {
        return Ok(None);
    };
    let stmt = Query::select()
        .expr(c("entity", "geic"))
        .from(a("entity"))
        .and_where(c("entity", "entity_id").eq(entity_id))
        .to_owned();
    first_geic(db, &stmt).await
}

async fn product_entity_geic(db: &Db, imei: &str) -> Result<Option<String>, ApiError> {
    let stmt = Query::select()
        .expr(c("entity", "geic"))
        .from(a("product_entity_linker"))
        .inner_join(
            a("entity"),
            c("entity", "entity_id").equals((a("product_entity_linker"), a("entity_id"))),
        )
        .and_where(c("product_entity_linker", "product_imei").eq(imei))
        .and_where(c("product_entity_linker", "date_removed").is_null())
        .limit(1)
        .to_owned();
    first_geic(db, &stmt).await
}

/// Inserts the repair in the workflow's initial state, with its creation
/// event and its first state visit.
async fn insert_repair(
    call: &Call<'_>,
    tx: &mut Tx,
    imei: &str,
    wf: &Workflow,
) -> Result<i64, ApiError> {
    let id = insert(
        call,
        tx,
        "repair",
        vec![
            ("product_imei", imei.into()),
            ("arrival_date", call.now.date().into()),
            ("pending_status", true.into()),
            ("workflow_name", wf.name.clone().into()),
            ("workflow_state_id", wf.initial_state.clone().into()),
            ("context", "{}".into()),
        ],
        "repair_id",
    )
    .await?;
    let event = record_event(
        call,
        tx,
        id,
        &wf.initial_state,
        "repair.created",
        &json!({"workflow_name": wf.name}),
        Some(&wf.initial_state),
    )
    .await?;
    // Not `modified`: the repair was created in this very transaction.
    tx.execute(&point_at_event(id, event)).await?;
    enter_state(call, tx, id, &wf.initial_state).await?;
    Ok(id)
}
