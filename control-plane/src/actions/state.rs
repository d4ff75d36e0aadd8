//! The lifecycle state machine of a unit (spec: `change_state`).
//!
//! A product's state is the `current_state_type` of the `state` row that
//! `product.latest_state_id` points at; a product without one is
//! NON_EXISTANT. Every transition appends a `state` row
//! (`prev_state_type` -> `current_state_type`) under the product's row lock
//! and writes a `product-status` notification.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::put;
use axum::Router;
use chrono::NaiveDateTime;
use sea_query::{Alias, Query};
use serde_json::{Map, Value as Json};

use super::object;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::db::Tx;
use crate::error::ApiError;
use crate::rows::{eq, insert_id, update};
use crate::web::{success, JsonBody};

pub const NON_EXISTANT: i64 = 1;
pub const STORED: i64 = 2;
pub const SHIPPED: i64 = 3;
pub const ACTIVATING: i64 = 4;
pub const ACTIVATED: i64 = 5;
pub const MONITORED: i64 = 6;
pub const UNMONITORED: i64 = 7;
pub const IN_REPAIR_SYSTEM: i64 = 8;
pub const TERMINATED: i64 = 9;

/// The spec's transition table: the states each state may move to.
pub fn allowed_transitions(from: i64) -> &'static [i64] {
    match from {
        NON_EXISTANT => &[STORED],
        STORED => &[SHIPPED, TERMINATED],
        SHIPPED => &[ACTIVATING, ACTIVATED, IN_REPAIR_SYSTEM, TERMINATED],
        ACTIVATING => &[ACTIVATED, IN_REPAIR_SYSTEM, TERMINATED],
        ACTIVATED => &[MONITORED, UNMONITORED, IN_REPAIR_SYSTEM, TERMINATED],
        MONITORED => &[UNMONITORED, IN_REPAIR_SYSTEM, TERMINATED],
        UNMONITORED => &[MONITORED, IN_REPAIR_SYSTEM, TERMINATED],
        IN_REPAIR_SYSTEM => &[ACTIVATED, TERMINATED],
        _ => &[],
    }
}

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/products/{id}/change_state", put(change_state))
}

/// The state type a `latest_state_id` points at (NON_EXISTANT for none).
pub async fn current_state_type(
    tx: &mut Tx,
    latest_state_id: Option<i64>,
) -> Result<i64, ApiError> {
    let Some(id) = latest_state_id else {
        return Ok(NON_EXISTANT);
    };
    let stmt = Query::select()
        .column(Alias::new("current_state_type"))
        .from(Alias::new("state"))
        .and_where(eq("state_id", id))
        .to_owned();
    let row: Option<(Option<i64>,)> = tx.fetch_typed_optional(&stmt).await?;
    Ok(row.and_then(|(state,)| state).unwrap_or(NON_EXISTANT))
}

/// Appends a `state` row and points the product at it, without checking
/// the transition table (callers do: [`transition`]; manufacturing records
/// the initial NON_EXISTANT). No notification.
pub async fn record_state(
    tx: &mut Tx,
    imei: &str,
    prev: i64,
    next: i64,
    by: &str,
    now: NaiveDateTime,
) -> Result<i64, ApiError> {
    let id = insert_id(
        tx,
        "state",
        vec![
            ("product_imei", imei.into()),
            ("prev_state_type", prev.into()),
            ("current_state_type", next.into()),
        ],
        by,
        now,
    )
    .await?;
    update(
        tx,
        "product",
        vec![("latest_state_id", id.into())],
        eq("product_imei", imei),
        by,
        now,
    )
    .await?;
    Ok(id)
}

/// Moves a locked product to `next` if the transition table allows it,
/// recording the `state` row and the `product-status` notification.
/// A forbidden transition is the spec's validation error:
/// `{"state_transition": " A unit may not transition from state '5' to state '2'"}`.
pub async fn transition(
    tx: &mut Tx,
    product: &super::Product,
    next: i64,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let imei = &product.product_imei;
    let prev = current_state_type(tx, product.latest_state_id).await?;
    if !allowed_transitions(prev).contains(&next) {
        return Err(ApiError::field(
            "state_transition",
            format!(" A unit may not transition from state '{prev}' to state '{next}'"),
        ));
    }
    record_state(tx, imei, prev, next, by, now).await?;
    super::notify_product_status(tx, imei, by, now).await
}

async fn change_state(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let body = object(body)?;
    let next = parse_new_state(&body)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let product = super::lock_product(&mut tx, &user.visibility, &imei).await?;
    transition(&mut tx, &product, next, &user.username, now).await?;
    tx.commit().await?;
    Ok(success(StatusCode::OK, "Product state changed", Json::Null))
}

fn parse_new_state(body: &Map<String, Json>) -> Result<i64, ApiError> {
    let next = super::require_int(body, "new_state")?;
    if !(NON_EXISTANT..=TERMINATED).contains(&next) {
        return Err(ApiError::field(
            "new_state",
            format!("field 'new_state' must be a state_type_id from 1 to 9, got {next}"),
        ));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table_is_the_spec_s() {
        assert_eq!(allowed_transitions(NON_EXISTANT), &[STORED]);
        assert!(allowed_transitions(TERMINATED).is_empty());
        assert!(allowed_transitions(IN_REPAIR_SYSTEM).contains(&ACTIVATED));
        assert!(!allowed_transitions(ACTIVATED).contains(&STORED));
        for s in 1..=9 {
            assert!(
                !allowed_transitions(s).contains(&s),
                "no self transition for {s}"
            );
        }
    }
}
