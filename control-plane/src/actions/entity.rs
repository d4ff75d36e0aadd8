//! Which entities a product belongs to, with the Unknown Entity rule: a
//! product with no entity belongs to entity 1 "Unknown Entity", which is
//! removed as soon as a real entity is assigned and restored when the last
//! one is removed.
//!
//! A link is a `product_entity_linker` row; it is current while
//! `date_removed` is NULL (a partial unique index keeps one current link
//! per product and entity). Removing a link sets `date_removed`, so the
//! history stays.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::put;
use axum::Router;
use chrono::NaiveDateTime;
use sea_query::{Alias, Expr, Order, Query};
use serde_json::{json, Value as Json};

use super::object;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::{Column, ColumnType, Permission};
use crate::db::Tx;
use crate::error::ApiError;
use crate::rows::{col, eq, insert, update, RowExt};
use crate::web::{success, JsonBody};

/// Entity 1, seeded by migration 0003.
pub const UNKNOWN_ENTITY: i64 = 1;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/products/{id}/assign_entity", put(assign_entity))
        .route("/products/{id}/change_entity", put(change_entity))
        .route("/products/{id}/remove_entity", put(remove_entity))
}

/// The entities a product currently belongs to: `(entity_id, name)`, by id.
pub async fn current_entities(tx: &mut Tx, imei: &str) -> Result<Vec<(i64, String)>, ApiError> {
    let stmt = Query::select()
        .expr_as(
            Expr::col((Alias::new("e"), Alias::new("entity_id"))),
            Alias::new("entity_id"),
        )
        .expr_as(
            Expr::col((Alias::new("e"), Alias::new("name"))),
            Alias::new("name"),
        )
        .from_as(Alias::new("product_entity_linker"), Alias::new("l"))
        .join_as(
            sea_query::JoinType::InnerJoin,
            Alias::new("entity"),
            Alias::new("e"),
            Expr::col((Alias::new("e"), Alias::new("entity_id")))
                .equals((Alias::new("l"), Alias::new("entity_id"))),
        )
        .and_where(Expr::col((Alias::new("l"), Alias::new("product_imei"))).eq(imei))
        .and_where(Expr::col((Alias::new("l"), Alias::new("date_removed"))).is_null())
        .order_by((Alias::new("e"), Alias::new("entity_id")), Order::Asc)
        .to_owned();
    let cols = [
        col("entity_id", ColumnType::Int),
        col("name", ColumnType::String),
    ];
    let refs: Vec<&Column> = cols.iter().collect();
    Ok(tx
        .fetch_all(&stmt, &refs)
        .await?
        .iter()
        .filter_map(|r| Some((r.int("entity_id")?, r.text("name")?.to_string())))
        .collect())
}

async fn entity_exists(tx: &mut Tx, entity_id: i64) -> Result<bool, ApiError> {
    let stmt = Query::select()
        .column(Alias::new("entity_id"))
        .from(Alias::new("entity"))
        .and_where(eq("entity_id", entity_id))
        .to_owned();
    let c = col("entity_id", ColumnType::Int);
    Ok(tx.fetch_optional(&stmt, &[&c]).await?.is_some())
}

async fn require_entity(tx: &mut Tx, field: &str, entity_id: i64) -> Result<(), ApiError> {
    if entity_exists(tx, entity_id).await? {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!("field '{field}' refers to entity entity_id {entity_id}, which does not exist"),
        ))
    }
}

/// Links a product to an entity (no-op when linked), removing the Unknown
/// Entity link when a real entity is added.
pub async fn link_entity(
    tx: &mut Tx,
    imei: &str,
    entity_id: i64,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let current = current_entities(tx, imei).await?;
    if !current.iter().any(|(id, _)| *id == entity_id) {
        insert(
            tx,
            "product_entity_linker",
            vec![
                ("product_imei", imei.into()),
                ("entity_id", entity_id.into()),
                ("date_added", now.into()),
            ],
            by,
            now,
        )
        .await?;
    }
    if entity_id != UNKNOWN_ENTITY {
        unlink(tx, imei, UNKNOWN_ENTITY, by, now).await?;
    }
    Ok(())
}

async fn unlink(
    tx: &mut Tx,
    imei: &str,
    entity_id: i64,
    by: &str,
    now: NaiveDateTime,
) -> Result<u64, ApiError> {
    update(
        tx,
        "product_entity_linker",
        vec![("date_removed", now.into())],
        eq("product_imei", imei)
            .and(eq("entity_id", entity_id))
            .and(Expr::col(Alias::new("date_removed")).is_null()),
        by,
        now,
    )
    .await
}

/// Removes a product's link to an entity; the Unknown Entity comes back
/// when no link is left.
pub async fn unlink_entity(
    tx: &mut Tx,
    imei: &str,
    entity_id: i64,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    unlink(tx, imei, entity_id, by, now).await?;
    if current_entities(tx, imei).await?.is_empty() {
        link_entity(tx, imei, UNKNOWN_ENTITY, by, now).await?;
    }
    Ok(())
}

async fn entities_body(tx: &mut Tx, imei: &str) -> Result<Json, ApiError> {
    let names: Vec<String> = current_entities(tx, imei)
        .await?
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    Ok(json!({ imei: names }))
}

async fn assign_entity(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let body = object(body)?;
    let entity_id = super::require_int(&body, "entity_id")?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    super::lock_product(&mut tx, &user.visibility, &imei).await?;
    require_entity(&mut tx, "entity_id", entity_id).await?;
    if entity_id == UNKNOWN_ENTITY {
        let real = current_entities(&mut tx, &imei)
            .await?
            .iter()
            .any(|(id, _)| *id != UNKNOWN_ENTITY);
        if real {
            return Err(ApiError::field(
                "entity_id",
                "The Unknown Entity is assigned automatically when a product has no other entity",
            ));
        }
    }
    link_entity(&mut tx, &imei, entity_id, &user.username, now).await?;
    let data = entities_body(&mut tx, &imei).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        format!("Product #{imei} assigned to entity: {entity_id}"),
        data,
    ))
}

async fn change_entity(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let body = object(body)?;
    let old = super::require_int(&body, "old_entity_id")?;
    let new = super::require_int(&body, "new_entity_id")?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    super::lock_product(&mut tx, &user.visibility, &imei).await?;
    require_entity(&mut tx, "new_entity_id", new).await?;
    if new == UNKNOWN_ENTITY {
        return Err(ApiError::field(
            "new_entity_id",
            "The Unknown Entity is assigned automatically; use remove_entity",
        ));
    }
    let current = current_entities(&mut tx, &imei).await?;
    if !current.iter().any(|(id, _)| *id == old) {
        return Err(ApiError::field(
            "old_entity_id",
            format!("Product #{imei} is not assigned to entity {old}"),
        ));
    }
    if old != new {
        unlink(&mut tx, &imei, old, &user.username, now).await?;
        link_entity(&mut tx, &imei, new, &user.username, now).await?;
    }
    let data = entities_body(&mut tx, &imei).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        format!("Product #{imei} assigned to entity: {new}"),
        data,
    ))
}

async fn remove_entity(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let body = object(body)?;
    let entity_id = super::require_int(&body, "entity_id")?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    super::lock_product(&mut tx, &user.visibility, &imei).await?;
    let current = current_entities(&mut tx, &imei).await?;
    if !current.iter().any(|(id, _)| *id == entity_id) {
        return Err(ApiError::field(
            "entity_id",
            format!("Product #{imei} is not assigned to entity {entity_id}"),
        ));
    }
    if entity_id == UNKNOWN_ENTITY {
        return Err(ApiError::field(
            "entity_id",
            "The Unknown Entity is removed by assigning another entity",
        ));
    }
    unlink_entity(&mut tx, &imei, entity_id, &user.username, now).await?;
    let data = entities_body(&mut tx, &imei).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        format!("Entity #{entity_id} removed from Product #{imei}"),
        data,
    ))
}
