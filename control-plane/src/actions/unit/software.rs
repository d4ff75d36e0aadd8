//! The software a unit runs or should run (see the module docs of
//! [`super`]): reads of `product_software_linker`, and the
//! `update_software`, `lock_software` and `expire_software_updates` routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDateTime;
use sea_query::{Alias, Expr, Order, Query};
use serde_json::{json, Value as Json};

use crate::actions::{object, JoinOn};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::db::Tx;
use crate::error::ApiError;
use crate::rows::{c, eq, insert, tc, update};
use crate::values::format_datetime;
use crate::web::{success, JsonBody};

/// The software the unit runs: `(software_version_type_id, name)`.
pub async fn active_software(tx: &mut Tx, imei: &str) -> Result<Option<(i64, String)>, ApiError> {
    let mut stmt = software_rows(imei);
    stmt.and_where(c("l", "date_added").is_not_null())
        .and_where(c("l", "date_removed").is_null())
        .order_by((Alias::new("l"), Alias::new("date_added")), Order::Desc)
        .order_by(
            (Alias::new("l"), Alias::new("product_software_linker_id")),
            Order::Desc,
        )
        .limit(1);
    let found = fetch_software(tx, &stmt).await?;
    Ok(found.into_iter().next().map(|r| (r.software_id, r.name)))
}

/// A `product_software_linker` row with its software's name.
#[derive(Debug, Clone)]
pub struct SoftwareLink {
    pub linker_id: i64,
    pub software_id: i64,
    pub name: String,
    pub update_attempts: i64,
    pub created_at: Option<String>,
}

/// `product_software_linker` as `l` joined to its `software_version_type` as `s`: the
/// base of every read of a unit's software links with their names.
pub(crate) fn software_links() -> sea_query::SelectStatement {
    Query::select()
        .from_as(Alias::new("product_software_linker"), Alias::new("l"))
        .join_on(
            "software_version_type",
            "s",
            "l",
            "software_version_type_id",
        )
        .to_owned()
}

fn software_rows(imei: &str) -> sea_query::SelectStatement {
    software_links()
        .expr_as(
            tc("l", "product_software_linker_id"),
            Alias::new("product_software_linker_id"),
        )
        .expr_as(
            tc("l", "software_version_type_id"),
            Alias::new("software_version_type_id"),
        )
        .expr_as(tc("s", "name"), Alias::new("name"))
        .expr_as(tc("l", "update_attempts"), Alias::new("update_attempts"))
        .expr_as(tc("l", "created_at"), Alias::new("created_at"))
        .and_where(c("l", "product_imei").eq(imei))
        .to_owned()
}

/// A row of [`software_rows`].
#[derive(sqlx::FromRow)]
struct SoftwareLinkRow {
    product_software_linker_id: Option<i64>,
    software_version_type_id: Option<i64>,
    name: Option<String>,
    update_attempts: Option<i64>,
    created_at: Option<NaiveDateTime>,
}

async fn fetch_software(
    tx: &mut Tx,
    stmt: &sea_query::SelectStatement,
) -> Result<Vec<SoftwareLink>, ApiError> {
    let rows: Vec<SoftwareLinkRow> = tx.fetch_typed(stmt).await?;
    Ok(rows
        .into_iter()
        .map(|r| SoftwareLink {
            linker_id: r.product_software_linker_id.unwrap_or_default(),
            software_id: r.software_version_type_id.unwrap_or_default(),
            name: r.name.unwrap_or_default(),
            update_attempts: r.update_attempts.unwrap_or_default(),
            created_at: r.created_at.as_ref().map(format_datetime),
        })
        .collect())
}

/// Pending software updates of a unit, oldest first.
pub async fn pending_software(tx: &mut Tx, imei: &str) -> Result<Vec<SoftwareLink>, ApiError> {
    let mut stmt = software_rows(imei);
    stmt.and_where(c("l", "date_added").is_null())
        .and_where(c("l", "date_removed").is_null())
        .order_by(
            (Alias::new("l"), Alias::new("product_software_linker_id")),
            Order::Asc,
        );
    fetch_software(tx, &stmt).await
}

/// Resolves the `software` argument: a `software_version_type_id` (number
/// or digit string) or a software `name`. A missing one is a 400 naming
/// the field.
pub async fn resolve_software(tx: &mut Tx, arg: &Json) -> Result<(i64, String), ApiError> {
    let by_id = match arg {
        Json::Number(n) => Some(n.as_i64().ok_or_else(|| {
            ApiError::field("software", "field 'software' must be a software id or name")
        })?),
        Json::String(s) => s.trim().parse::<i64>().ok(),
        _ => {
            return Err(ApiError::field(
                "software",
                "field 'software' must be a software_version_type_id or a software name",
            ))
        }
    };
    let mut stmt = Query::select()
        .columns(["software_version_type_id", "name"].map(Alias::new))
        .from(Alias::new("software_version_type"))
        .order_by(Alias::new("software_version_type_id"), Order::Asc)
        .limit(1)
        .to_owned();
    let name = arg.as_str().unwrap_or_default().to_string();
    match by_id {
        Some(id) => {
            stmt.and_where(eq("software_version_type_id", id).or(eq("name", name.as_str())))
        }
        None => stmt.and_where(eq("name", name.as_str())),
    };
    let found: Option<(Option<i64>, Option<String>)> = tx.fetch_typed_optional(&stmt).await?;
    found
        .and_then(|(id, name)| Some((id?, name?)))
        .ok_or_else(|| {
            ApiError::field(
                "software",
                format!("No software_version_type with id or name {arg}"),
            )
        })
}

/// Refuses software that the product type does not list, when the product
/// type lists any (`product_type_software_version_type_linker`): sending a
/// unit another hardware's firmware could brick it.
async fn check_software_fits(
    tx: &mut Tx,
    product: &crate::actions::Product,
    software_id: i64,
    name: &str,
) -> Result<(), ApiError> {
    let product_type = product.product_type_id;
    let stmt = Query::select()
        .column(Alias::new("software_version_type_id"))
        .from(Alias::new("product_type_software_version_type_linker"))
        .and_where(eq("product_type_id", product_type))
        .to_owned();
    let allowed: Vec<(Option<i64>,)> = tx.fetch_typed(&stmt).await?;
    let allowed: Vec<i64> = allowed.into_iter().filter_map(|(id,)| id).collect();
    if allowed.is_empty() || allowed.contains(&software_id) {
        Ok(())
    } else {
        Err(ApiError::field(
            "software",
            format!("software_version '{name}' is not available for product_type {product_type}"),
        ))
    }
}

/// Expires a unit's pending software updates; returns how many.
pub async fn expire_pending_software(
    tx: &mut Tx,
    imei: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<u64, ApiError> {
    update(
        tx,
        "product_software_linker",
        vec![("date_removed", now.into())],
        eq("product_imei", imei)
            .and(Expr::col(Alias::new("date_added")).is_null())
            .and(Expr::col(Alias::new("date_removed")).is_null()),
        by,
        now,
    )
    .await
}

/// Schedules `software_id` for a locked product: pending updates to other
/// software expire; an identical pending update is kept (idempotent).
/// Nothing is scheduled when the unit already runs it. The lock is the
/// caller's business.
pub async fn schedule_software(
    tx: &mut Tx,
    product: &crate::actions::Product,
    software_id: i64,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let imei = product.product_imei.as_str();
    let pending = pending_software(tx, imei).await?;
    let keep = pending
        .iter()
        .find(|p| p.software_id == software_id)
        .map(|p| p.linker_id);
    for p in pending.iter().filter(|p| Some(p.linker_id) != keep) {
        update(
            tx,
            "product_software_linker",
            vec![("date_removed", now.into())],
            eq("product_software_linker_id", p.linker_id),
            by,
            now,
        )
        .await?;
    }
    let runs_it = active_software(tx, imei)
        .await?
        .is_some_and(|(id, _)| id == software_id);
    if keep.is_none() && !runs_it {
        link_software(tx, imei, software_id, None, by, now).await?;
    }
    Ok(())
}

/// Links `software_id` to the unit: installed at `installed` (the unit reported it), or a
/// pending update when `None`.
pub(super) async fn link_software(
    tx: &mut Tx,
    imei: &str,
    software_id: i64,
    installed: Option<NaiveDateTime>,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let mut values = vec![
        ("product_imei", imei.into()),
        ("software_version_type_id", software_id.into()),
    ];
    if let Some(at) = installed {
        values.push(("date_added", at.into()));
    }
    values.push(("update_attempts", 0i64.into()));
    insert(tx, "product_software_linker", values, by, now).await?;
    Ok(())
}

pub(super) async fn update_software(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let body = object(body)?;
    let arg = body
        .get("software")
        .filter(|v| !v.is_null())
        .ok_or_else(|| ApiError::field("software", "field 'software' is required"))?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let product = crate::actions::lock_product(&mut tx, &user.visibility, &imei).await?;
    let (software_id, name) = resolve_software(&mut tx, arg).await?;
    if let Some(lock) = product.software_lock {
        if lock != software_id {
            return Err(ApiError::field(
                "software",
                format!(
                    "Product #{imei} is locked to software_version_type {lock}; remove the lock first"
                ),
            ));
        }
    }
    check_software_fits(&mut tx, &product, software_id, &name).await?;
    schedule_software(&mut tx, &product, software_id, &user.username, now).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        format!("#{imei} updated to software_version {name}"),
        Json::Null,
    ))
}

pub(super) async fn lock_software(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let body = object(body)?;
    // A blank payload, `{}`, `{"software": null}` or `""` all remove the lock.
    let arg = body
        .get("software")
        .filter(|v| !v.is_null() && v.as_str().is_none_or(|s| !s.trim().is_empty()));
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let product = crate::actions::lock_product(&mut tx, &user.visibility, &imei).await?;
    let Some(arg) = arg else {
        update(
            &mut tx,
            "product",
            vec![("software_lock", sea_query::Value::BigInt(None))],
            eq("product_imei", imei.as_str()),
            &user.username,
            now,
        )
        .await?;
        tx.commit().await?;
        return Ok(success(
            StatusCode::OK,
            format!("#{imei} software_lock is now removed"),
            json!({"software_lock_id": null, "software_lock_name": null}),
        ));
    };
    let (software_id, name) = resolve_software(&mut tx, arg).await?;
    check_software_fits(&mut tx, &product, software_id, &name).await?;
    update(
        &mut tx,
        "product",
        vec![("software_lock", software_id.into())],
        eq("product_imei", imei.as_str()),
        &user.username,
        now,
    )
    .await?;
    schedule_software(&mut tx, &product, software_id, &user.username, now).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        format!("#{imei} updated and locked to software_version {name}"),
        json!({"software_lock_id": software_id, "software_lock_name": name}),
    ))
}

pub(super) async fn expire_software_updates(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    crate::actions::lock_product(&mut tx, &user.visibility, &imei).await?;
    let n = expire_pending_software(&mut tx, &imei, &user.username, now).await?;
    tx.commit().await?;
    let message = if n == 0 {
        format!("Product {imei} had no pending updates to expire")
    } else {
        format!("Product {imei} had {n} software update(s) expired")
    };
    Ok(success(StatusCode::OK, message, Json::Null))
}
