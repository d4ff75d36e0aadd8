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
use serde_json::{json, Map, Value as Json};

use super::{object, JoinOn};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::{ColumnType, Permission};
use crate::db::Tx;
use crate::error::ApiError;
use crate::rows::{c, col, eq, id_names, insert, update};
use crate::web::{success, JsonBody};

/// Entity 1, seeded by migration 0003.
pub const UNKNOWN_ENTITY: i64 = 1;

pub(super) fn router() -> Router<AppState> {
    ENTITY_ROUTES
        .iter()
        .fold(Router::new(), |router, &(path, parse)| {
            let handler = move |State(state): State<AppState>,
                                user: AuthUser,
                                Path(imei): Path<String>,
                                JsonBody(body): JsonBody| {
                entity_request(state, user, imei, body, parse)
            };
            router.route(path, put(handler))
        })
}

/// The entities a product currently belongs to: `(entity_id, name)`, by id.
pub async fn current_entities(tx: &mut Tx, imei: &str) -> Result<Vec<(i64, String)>, ApiError> {
    let stmt = Query::select()
        .expr_as(c("e", "entity_id"), Alias::new("entity_id"))
        .expr_as(c("e", "name"), Alias::new("name"))
        .from_as(Alias::new("product_entity_linker"), Alias::new("l"))
        .join_on("entity", "e", "l", "entity_id")
        .and_where(c("l", "product_imei").eq(imei))
        .and_where(c("l", "date_removed").is_null())
        .order_by((Alias::new("e"), Alias::new("entity_id")), Order::Asc)
        .to_owned();
    id_names(tx, &stmt).await
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

/// A change of a product's entities, as one of the three requests asks
/// for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityChange {
    /// `assign_entity`: add a link.
    Assign(i64),
    /// `change_entity`: move the link `old` to `new`.
    Change { old: i64, new: i64 },
    /// `remove_entity`: remove a link.
    Remove(i64),
}

/// The parser of one entity route's body.
type ParseChange = fn(&Map<String, Json>) -> Result<EntityChange, ApiError>;

/// The entity routes and how each reads its body.
const ENTITY_ROUTES: [(&str, ParseChange); 3] = [
    ("/products/{id}/assign_entity", |body| {
        Ok(EntityChange::Assign(super::require_int(body, "entity_id")?))
    }),
    ("/products/{id}/change_entity", |body| {
        let old = super::require_int(body, "old_entity_id")?;
        let new = super::require_int(body, "new_entity_id")?;
        Ok(EntityChange::Change { old, new })
    }),
    ("/products/{id}/remove_entity", |body| {
        Ok(EntityChange::Remove(super::require_int(body, "entity_id")?))
    }),
];

impl EntityChange {
    /// Applies the change to a product locked in `tx`, refusing what the
    /// Unknown Entity rule forbids; returns the spec's success message.
    pub async fn apply(
        self,
        tx: &mut Tx,
        imei: &str,
        by: &str,
        now: NaiveDateTime,
    ) -> Result<String, ApiError> {
        match self {
            Self::Assign(entity_id) => {
                require_entity(tx, "entity_id", entity_id).await?;
                if entity_id == UNKNOWN_ENTITY {
                    let real = current_entities(tx, imei)
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
                link_entity(tx, imei, entity_id, by, now).await?;
                Ok(format!("Product #{imei} assigned to entity: {entity_id}"))
            }
            Self::Change { old, new } => {
                require_entity(tx, "new_entity_id", new).await?;
                if new == UNKNOWN_ENTITY {
                    return Err(ApiError::field(
                        "new_entity_id",
                        "The Unknown Entity is assigned automatically; use remove_entity",
                    ));
                }
                require_linked(tx, imei, "old_entity_id", old).await?;
                if old != new {
                    unlink(tx, imei, old, by, now).await?;
                    link_entity(tx, imei, new, by, now).await?;
                }
                Ok(format!("Product #{imei} assigned to entity: {new}"))
            }
            Self::Remove(entity_id) => {
                require_linked(tx, imei, "entity_id", entity_id).await?;
                if entity_id == UNKNOWN_ENTITY {
                    return Err(ApiError::field(
                        "entity_id",
                        "The Unknown Entity is removed by assigning another entity",
                    ));
                }
                unlink_entity(tx, imei, entity_id, by, now).await?;
                Ok(format!("Entity #{entity_id} removed from Product #{imei}"))
            }
        }
    }
}

/// A 400 on `field` unless the product is linked to `entity_id` now.
async fn require_linked(
    tx: &mut Tx,
    imei: &str,
    field: &str,
    entity_id: i64,
) -> Result<(), ApiError> {
    let current = current_entities(tx, imei).await?;
    if current.iter().any(|(id, _)| *id == entity_id) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!("Product #{imei} is not assigned to entity {entity_id}"),
        ))
    }
}

/// One entity route: ADMIN, the body parsed, the change applied to the
/// locked product, and the product's entities afterwards in the answer.
async fn entity_request(
    state: AppState,
    user: AuthUser,
    imei: String,
    body: Json,
    parse: ParseChange,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let change = parse(&object(body)?)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    super::lock_product(&mut tx, &user.visibility, &imei).await?;
    let message = change.apply(&mut tx, &imei, &user.username, now).await?;
    let data = entities_body(&mut tx, &imei).await?;
    tx.commit().await?;
    Ok(success(StatusCode::OK, message, data))
}
