//! DCM endpoints: `add_payment_command`, `force_reset`,
//! `balance_and_pending_payments` (spec: "DCM - Device Credit Management").
//!
//! Permissions (the spec names only the GET's): adding a command and
//! force-resetting need TECHNICAL, the level that may enable and disable a
//! unit, which is what credit does on a DCM unit; the GET needs OVERVIEW.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value as Json};

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::db::Tx;
use crate::dcm::{self, Category, NewCommand};
use crate::error::ApiError;
use crate::values::format_datetime;
use crate::web::{success, JsonBody};

/// Longest accepted `transaction_id` (it is a unique key; clients send UUIDs).
pub(super) const MAX_TRANSACTION_ID: usize = 255;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/products/{id}/add_payment_command",
            post(add_payment_command),
        )
        .route("/products/{id}/force_reset", post(force_reset))
        .route(
            "/products/{id}/balance_and_pending_payments",
            get(balance_and_pending_payments),
        )
}

fn object(body: Json, what: &str) -> Result<Map<String, Json>, ApiError> {
    match body {
        Json::Object(m) => Ok(m),
        _ => Err(ApiError::BadRequest(format!(
            "The body must be a JSON object with {what}"
        ))),
    }
}

fn transaction_id(body: &Map<String, Json>) -> Result<String, ApiError> {
    match body.get("transaction_id") {
        None | Some(Json::Null) => Err(ApiError::field(
            "transaction_id",
            "field 'transaction_id' is required",
        )),
        Some(Json::String(s)) if s.trim().is_empty() => Err(ApiError::field(
            "transaction_id",
            "field 'transaction_id' may not be empty",
        )),
        Some(Json::String(s)) if s.chars().count() > MAX_TRANSACTION_ID => Err(ApiError::field(
            "transaction_id",
            format!("field 'transaction_id' may be at most {MAX_TRANSACTION_ID} characters long"),
        )),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::field(
            "transaction_id",
            "field 'transaction_id' must be a string",
        )),
    }
}

/// Reads `{"value", "category", "transaction_id"}`; every problem is named.
fn parse_command(body: Json) -> Result<NewCommand, ApiError> {
    let body = object(body, "'value', 'category' and 'transaction_id'")?;
    let mut errors = Map::new();
    let value = match body.get("value") {
        None | Some(Json::Null) => {
            errors.insert("value".into(), json!("field 'value' is required"));
            None
        }
        Some(v) => match v.as_i64() {
            Some(n) => Some(n),
            None => {
                errors.insert(
                    "value".into(),
                    json!("field 'value' must be an integer number of seconds"),
                );
                None
            }
        },
    };
    let category = match body.get("category") {
        None | Some(Json::Null) => {
            errors.insert("category".into(), json!("field 'category' is required"));
            None
        }
        Some(c) => {
            match c.as_str().and_then(Category::parse) {
                Some(c) => Some(c),
                None => {
                    errors.insert(
                    "category".into(),
                    json!("field 'category' must be one of 'payment', 'bad-payment', 'zero-command'"),
                );
                    None
                }
            }
        }
    };
    let transaction_id = match transaction_id(&body) {
        Ok(t) => Some(t),
        Err(ApiError::Validation(m)) => {
            errors.extend(m);
            None
        }
        Err(e) => return Err(e),
    };
    match (value, category, transaction_id) {
        (Some(value), Some(category), Some(transaction_id)) if errors.is_empty() => {
            Ok(NewCommand {
                category,
                value,
                transaction_id,
            })
        }
        _ => Err(ApiError::Validation(errors)),
    }
}

/// Counts a payment-command request by category and outcome (after commit
/// for accepted ones, so a rolled-back transaction is never counted).
fn count_command(category: &'static str, outcome: &'static str) {
    metrics::counter!("smartsolar_dcm_payment_commands_total", "category" => category, "outcome" => outcome)
        .increment(1);
}

/// Commits a payment-command write with the unit's pending MTs recorded
/// beside it (the unit gets them on its next connect, whatever restarts),
/// counts it as accepted, and queues the MTs for the unit now.
async fn commit_and_queue(
    state: &AppState,
    tx: Tx,
    imei: &str,
    category: &'static str,
) -> Result<(), ApiError> {
    let sent = crate::rtc::mt::commit_with_pending(state, tx, imei).await?;
    count_command(category, "accepted");
    crate::rtc::mt::enqueue_after_commit(state, imei, sent).await;
    Ok(())
}

async fn add_payment_command(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    let command = parse_command(body)?;
    let mut tx = state.db.begin().await?;
    let stored = dcm::add_payment_command(
        &mut tx,
        &state.catalogue,
        &imei,
        &command,
        &user.username,
        &user.visibility,
        state.clock.now(),
    )
    .await
    .inspect_err(|_| count_command(command.category.as_str(), "rejected"))?;
    commit_and_queue(&state, tx, &imei, stored.category.as_str()).await?;
    tracing::info!(
        product_imei = %imei,
        payment_command_id = stored.payment_command_id,
        category = stored.category.as_str(),
        value = stored.value,
        user = %user.username,
        "payment_command added"
    );
    Ok(success(
        StatusCode::CREATED,
        format!("new payment_command added to product #{imei}"),
        Json::Null,
    ))
}

async fn force_reset(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    let body = object(body, "'transaction_id'")?;
    let transaction_id = transaction_id(&body)?;
    let mut tx = state.db.begin().await?;
    let reset = dcm::force_reset(
        &mut tx,
        &state.catalogue,
        &imei,
        &transaction_id,
        &user.username,
        &user.visibility,
        state.clock.now(),
    )
    .await
    .inspect_err(|_| count_command("force-reset", "rejected"))?;
    commit_and_queue(&state, tx, &imei, "force-reset").await?;
    dcm::count_events("voided", reset.voided);
    tracing::info!(
        product_imei = %imei,
        outstanding_payments = reset.outstanding_payments,
        last_known_balance = ?reset.last_known_balance,
        user = %user.username,
        "product force-reset"
    );
    Ok(success(
        StatusCode::CREATED,
        format!("Product #{imei} has been Force-Reset"),
        json!({
            "outstanding_payments": reset.outstanding_payments,
            "last_known_balance": reset.last_known_balance,
        }),
    ))
}

async fn balance_and_pending_payments(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let (balance, pending) =
        dcm::balance_and_pending(&state.db, &state.catalogue, &imei, &user.visibility).await?;
    let data = BalanceAndPending {
        balance: balance.as_ref().map(|b| b.balance),
        expected_expiry: balance
            .as_ref()
            .map(|b| format_datetime(&b.expected_expiry)),
        pending_payment_commands: pending
            .iter()
            .map(|c| PendingCommand {
                category: c.category.as_str(),
                created_at: c.created_at.as_ref().map(format_datetime),
                modified_at: c.modified_at.as_ref().map(format_datetime),
                value: c.value,
            })
            .collect(),
    };
    Ok(success(
        StatusCode::OK,
        "Balance and pending credits.",
        serde_json::to_value(data).expect("plain fields serialise"),
    ))
}

/// `data` of `balance_and_pending_payments`. A struct, so the handler and
/// its schema in the OpenAPI document ([`Self::schema`]) name the same
/// fields: `http::openapi`'s tests hold the one to the other.
#[derive(serde::Serialize)]
pub(crate) struct BalanceAndPending {
    balance: Option<i64>,
    expected_expiry: Option<String>,
    pending_payment_commands: Vec<PendingCommand>,
}

/// A command the unit has not acknowledged yet, newest first.
#[derive(serde::Serialize)]
pub(crate) struct PendingCommand {
    category: &'static str,
    created_at: Option<String>,
    modified_at: Option<String>,
    value: i64,
}

impl BalanceAndPending {
    pub(crate) fn schema() -> Json {
        let time = |description: &str| {
            let mut t = super::openapi::datetime_read_schema();
            t["nullable"] = json!(true);
            t["description"] = json!(description);
            t
        };
        let categories: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
        let command = json!({"type": "object",
        "required": ["category", "created_at", "modified_at", "value"],
        "properties": {
            "category": {"type": "string", "enum": categories},
            "created_at": time("When the command was added"),
            "modified_at": time("When the command last changed"),
            "value": {"type": "integer", "format": "int64", "description": "Seconds of credit"},
        }});
        json!({"type": "object",
        "required": ["balance", "expected_expiry", "pending_payment_commands"],
        "properties": {
            "balance": {"type": "integer", "format": "int64", "nullable": true,
                        "description": "Seconds of credit the unit last reported; null if it never did"},
            "expected_expiry": time("When that credit runs out"),
            "pending_payment_commands": {"type": "array", "items": command,
                "description": "Commands the unit has not acknowledged, newest first"},
        }})
    }

    /// A value with every field set, for the tests that compare the two.
    #[cfg(test)]
    pub(crate) fn example() -> Self {
        Self {
            balance: Some(3600),
            expected_expiry: Some("2016-07-01T12:34:45.123456".into()),
            pending_payment_commands: vec![PendingCommand {
                category: "payment",
                created_at: Some("2016-07-01T12:34:45.123456".into()),
                modified_at: Some("2016-07-01T12:34:45.123456".into()),
                value: 60,
            }],
        }
    }
}
