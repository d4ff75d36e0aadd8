//! The RTC product endpoints: `command_request`, `sync`, `status_update`,
//! `rtc_online_status`, `force_connection` (spec: "Product Actions").
//!
//! Permissions (the spec names none): `command_request` and `force_connection` need
//! ADMIN (an arbitrary AT command; an SMS for non-RTC units, like `send_wakeup`);
//! `sync`, `status_update` and `rtc_online_status` need TECHNICAL (call-centre
//! actions, like enable/disable). Another entity's unit is a 404.

use ::rtc::StatusReason;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::json;

use super::mt::{self, Sent};
use crate::actions::{object, str_field};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::error::ApiError;
use crate::web::{success, JsonBody};

/// Longest accepted diagnostic command.
const MAX_COMMAND: usize = 1000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/products/{id}/command_request", post(command_request))
        .route("/products/{id}/sync", post(sync))
        .route("/products/{id}/status_update", post(status_update))
        .route("/products/{id}/rtc_online_status", post(rtc_online_status))
        .route("/products/{id}/force_connection", post(force_connection))
}

/// The visible product's `rtc_enabled_flag` (404 when not visible).
async fn visible_rtc_flag(state: &AppState, user: &AuthUser, imei: &str) -> Result<bool, ApiError> {
    let mut tx = state.db.begin_read().await?;
    let product = crate::actions::visible_product(&mut tx, &user.visibility, imei).await?;
    tx.commit().await?;
    Ok(product.rtc_enabled_flag)
}

fn not_rtc(imei: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "Product {imei} is not RTC enabled (rtc_enabled_flag is False)"
    ))
}

async fn require_rtc(state: &AppState, user: &AuthUser, imei: &str) -> Result<(), ApiError> {
    if visible_rtc_flag(state, user, imei).await? {
        Ok(())
    } else {
        Err(not_rtc(imei))
    }
}

/// `data` of an MT answer: the spec shows `{}`; the row's id and correlation id let a
/// client follow the delivery in `rtc_message_history`.
/// The answer to a request that put an MT on the bus: `message` with the
/// `rtc_message_history` row and the correlation id.
fn sent_response(message: &str, sent: &Sent) -> Response {
    success(
        StatusCode::OK,
        message,
        json!({
            "rtc_message_history_id": sent.rtc_message_history_id,
            "message_reference": sent.correlation_id.to_string(),
        }),
    )
}

async fn command_request(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let body = object(body)?;
    let command = str_field(&body, "command")?
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ApiError::field("command", "field 'command' is required"))?;
    if command.len() > MAX_COMMAND {
        return Err(ApiError::field(
            "command",
            format!("field 'command' may be at most {MAX_COMMAND} characters long"),
        ));
    }
    require_rtc(&state, &user, &imei).await?;
    let sent = mt::send(
        &state,
        None,
        &imei,
        &mt::command_message(&command),
        &user.username,
    )
    .await?;
    Ok(sent_response("command successfully sent", &sent))
}

async fn sync(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    require_rtc(&state, &user, &imei).await?;
    let sent = mt::send(&state, None, &imei, &mt::sync_message(), &user.username).await?;
    Ok(sent_response("sync request successfully sent", &sent))
}

async fn status_update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    require_rtc(&state, &user, &imei).await?;
    let mut tx = state.db.begin().await?;
    let desired = mt::DesiredState::load(&mut tx, &imei).await?;
    let mut sent = desired
        .send(&state, Some(&mut tx), &imei, &user.username)
        .await?;
    tx.commit().await?;
    sent.enqueue(&state).await?;
    Ok(sent_response("status update successfully sent", &sent))
}

async fn rtc_online_status(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    let body = object(body)?;
    let online = match str_field(&body, "status")?.as_deref() {
        Some("online") => true,
        Some("offline") => false,
        Some(other) => {
            return Err(ApiError::field(
                "status",
                format!("field 'status' must be 'online' or 'offline', got '{other}'"),
            ))
        }
        None => return Err(ApiError::field("status", "field 'status' is required")),
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let product = crate::actions::lock_product(&mut tx, &user.visibility, &imei).await?;
    if !product.rtc_enabled_flag {
        return Err(not_rtc(&imei));
    }
    let id = super::record_connection_status(
        &mut tx,
        &imei,
        online,
        StatusReason::UserRequest,
        None,
        now,
        &user.username,
    )
    .await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        "RTC online status set",
        json!({"rtc_connection_history_id": id}),
    ))
}

async fn force_connection(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    if visible_rtc_flag(&state, &user, &imei).await? {
        let sent = mt::send(&state, None, &imei, &mt::sync_message(), &user.username).await?;
        return Ok(sent_response("Force connection request sent", &sent));
    }
    // Not an RTC unit: a WAKEUP SMS, as `send_wakeup` sends it.
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    crate::actions::lock_product(&mut tx, &user.visibility, &imei).await?;
    let id = crate::actions::sms::record_wakeup(
        &mut tx,
        &imei,
        None,
        &user.username,
        now,
        &state.config,
    )
    .await?;
    tx.commit().await?;
    let (row, handover) = crate::actions::sms::deliver(&state, id).await?;
    let ok = success(
        StatusCode::OK,
        "Force connection request sent",
        json!({"sms_history_id": id}),
    );
    Ok(crate::actions::sms::handover_response(handover, row, ok))
}
