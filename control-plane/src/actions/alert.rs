//! Alert dismissal; every dismissal publishes the alert to `product-alert`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::put;
use axum::Router;
use sea_query::LockType;
use serde_json::{json, Value as Json};

use super::object;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::db::{DbError, Row, Tx};
use crate::error::ApiError;
use crate::rows::{eq, update, RowExt};
use crate::web::{success, JsonBody};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/alerts/{id}/dismiss", put(dismiss))
}

/// Publishes `alert` as it is now on `product-alert`, in the caller's
/// transaction: every raise and dismissal, by a user or by the alert engine.
pub(crate) async fn publish(
    tx: &mut Tx,
    alert: &Row,
    now: chrono::NaiveDateTime,
) -> Result<i64, DbError> {
    crate::outbox::enqueue(
        tx,
        crate::outbox::PRODUCT_ALERT,
        alert.text("product_imei"),
        alert_data(alert),
        now,
    )
    .await
}

/// The `product-alert` data of an alert row (spec: "Channel Data").
pub fn alert_data(alert: &Row) -> Json {
    let get = |k: &str| alert.get(k).cloned().unwrap_or(Json::Null);
    json!({
        "alert_id": get("alert_id"),
        "product_imei": get("product_imei"),
        "alert_type_id": get("alert_type_id"),
        "start_time": get("start_time"),
        "dismissed_at": get("dismissed_at"),
        "dismissed_by": get("dismissed_by"),
        "dismissal_reason": get("dismissal_reason"),
        "repair_id": get("repair_id"),
        "extra_info": get("extra_info"),
        "customer_called_date": get("customer_contact_date"),
    })
}

async fn locked_alert(tx: &mut Tx, user: &AuthUser, id: i64) -> Result<Option<Row>, ApiError> {
    let mut stmt = crate::query::compile_get(
        crate::rows::catalogue(),
        crate::rows::table("alert"),
        id.into(),
        &user.visibility,
    );
    stmt.lock(LockType::Update);
    crate::rows::row(tx, "alert", &stmt).await
}

async fn dismiss(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    let not_found = || ApiError::NotFound(format!("No alert with alert_id '{id}'"));
    let alert_id = id.parse::<i64>().map_err(|_| not_found())?;
    let body = object(body)?;
    let reason = super::str_field(&body, "dismissal_reason")?;
    let extra = super::str_field(&body, "extra_info")?;
    let repair = super::int_field(&body, "repair_id")?;
    for key in body.keys() {
        if !["dismissal_reason", "extra_info", "repair_id"].contains(&key.as_str()) {
            return Err(ApiError::field(
                key.clone(),
                format!("unknown field '{key}'; expected dismissal_reason, extra_info, repair_id"),
            ));
        }
    }
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let alert = locked_alert(&mut tx, &user, alert_id)
        .await?
        .ok_or_else(not_found)?;
    let message = format!("Alert #{alert_id} has been dismissed");
    if alert.text("dismissed_at").is_some() {
        // Dismissing twice (a double click) changes and publishes nothing.
        return Ok(success(StatusCode::OK, message, Json::Null));
    }
    if let Some(repair_id) = repair {
        let stmt = sea_query::Query::select()
            .column(sea_query::Alias::new("repair_id"))
            .from(sea_query::Alias::new("repair"))
            .and_where(eq("repair_id", repair_id))
            .to_owned();
        let found: Option<(i64,)> = tx.fetch_typed_optional(&stmt).await?;
        if found.is_none() {
            return Err(ApiError::field(
                "repair_id",
                format!("field 'repair_id' refers to repair repair_id {repair_id}, which does not exist"),
            ));
        }
    }
    let mut values: Vec<(&str, sea_query::Value)> = vec![
        ("dismissed_at", now.into()),
        ("dismissed_by", user.username.as_str().into()),
    ];
    if let Some(r) = reason {
        values.push(("dismissal_reason", r.into()));
    }
    if let Some(e) = extra {
        values.push(("extra_info", e.into()));
    }
    if let Some(r) = repair {
        values.push(("repair_id", r.into()));
    }
    update(
        &mut tx,
        "alert",
        values,
        eq("alert_id", alert_id),
        &user.username,
        now,
    )
    .await?;
    let alert = locked_alert(&mut tx, &user, alert_id)
        .await?
        .ok_or_else(not_found)?;
    publish(&mut tx, &alert, now).await?;
    tx.commit().await?;
    Ok(success(StatusCode::OK, message, Json::Null))
}
