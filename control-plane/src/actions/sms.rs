//! SMS to units: the provider trait, WAKEUP SMS, delivery receipts, expiry.
//!
//! # Life of an SMS
//! 1. A row is written to `sms_history` inside the transaction that wants
//!    the SMS (an enable, a `send_wakeup`): `status` NULL, `sent_time` now,
//!    `sms_timeout` = `sent_time` + the timeout (3600 s for wakeups), and a
//!    `message_reference` of our own making (`/smartsolar/<micros>/<random>`),
//!    so a receipt can never arrive for a reference we do not know yet.
//! 2. After commit, [`deliver`] hands it to the [`SmsProvider`]. A provider
//!    may answer with its own reference, which replaces ours; a provider
//!    failure sets `status` to `Failed` (not retried: a WAKEUP only speeds
//!    up a change the unit picks up on its next scheduled connection anyway).
//!    With no provider configured the SMS is not sent: `status` `NotSent`.
//!    Either way `status_info` says why.
//! 3. The provider's delivery receipt (`POST /v1/sms/delivery_receipt`)
//!    sets `status` to `Delivered`; `modified_at` is the delivery time.
//! 4. [`expire_undelivered`] (called by the scheduler) sets `status` to
//!    `Expired` on SMS still undelivered past their `sms_timeout`. A receipt
//!    that arrives after that leaves `Expired` in place: the SMS was not
//!    delivered within its timeout, which is what `Expired` says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::NaiveDateTime;
use rand::Rng;
use sea_query::{Alias, Expr, Query};
use serde_json::{json, Value as Json};

use super::object;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::config::ControlPlaneConfig;
use crate::db::{Row, Tx};
use crate::error::ApiError;
use crate::rows::{eq, insert_id, select_all, tc, update};
use crate::web::{success, JsonBody};

/// The text of a WAKEUP SMS.
pub const WAKEUP_MESSAGE: &str = "WAKEUP";

/// `sms_history.trigger` of a WAKEUP SMS.
pub const WAKEUP_TRIGGER: &str = "wakeup";

/// `sms_history.status` values (NULL: sent, not delivered yet).
pub const DELIVERED: &str = "Delivered";
pub const EXPIRED: &str = "Expired";
pub const FAILED: &str = "Failed";
/// Never handed to a provider, because none is configured.
pub const NOT_SENT: &str = "NotSent";

/// The user recorded on rows the system changes by itself.
const SYSTEM_USER: &str = "smartsolar";

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/sms/delivery_receipt", post(delivery_receipt))
}

/// One SMS to one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sms {
    pub product_imei: String,
    pub imsi: Option<String>,
    pub iccid: Option<String>,
    pub message: String,
    /// Our reference; providers that accept a client reference should echo
    /// it in their delivery receipts.
    pub reference: String,
}

/// Why a provider did not take an SMS.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// The provider could not be reached or answered with an error status.
    #[error("SMS provider request failed: {0}")]
    Transport(String),
    /// The provider answered 2xx with a body we could not read.
    #[error("SMS provider answered with an unreadable body: {0}")]
    BadResponse(String),
    /// There is no provider to send with.
    #[error("no SMS provider is configured (SMARTSOLAR_SMS_HTTP_URL), so the SMS was not sent")]
    NotConfigured,
}

/// A boxed future, so providers can sit behind `dyn`.
pub type SendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<String>, SmsError>> + Send + 'a>>;

/// Something that sends SMS. `send` returns the provider's own message
/// reference when it has one (else ours is kept).
pub trait SmsProvider: Send + Sync + 'static {
    fn send<'a>(&'a self, sms: &'a Sms) -> SendFuture<'a>;
}

/// The provider when none is configured (deployments whose units are
/// RTC-only, development): it sends nothing and says so, so the SMS is
/// recorded `NotSent` rather than reported as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProvider;

impl SmsProvider for NoProvider {
    fn send<'a>(&'a self, _sms: &'a Sms) -> SendFuture<'a> {
        Box::pin(async { Err(SmsError::NotConfigured) })
    }
}

/// Posts each SMS as JSON to a URL:
/// `{"product_imei", "imsi", "iccid", "message", "reference"}`, with
/// `Authorization: Bearer <token>` when a token is configured. Any 2xx is
/// success; a JSON answer with a string `message_reference` replaces our
/// reference.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl HttpProvider {
    pub fn new(url: String, token: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self { client, url, token }
    }
}

impl SmsProvider for HttpProvider {
    fn send<'a>(&'a self, sms: &'a Sms) -> SendFuture<'a> {
        Box::pin(async move {
            let mut req = self.client.post(&self.url).json(&json!({
                "product_imei": sms.product_imei,
                "imsi": sms.imsi,
                "iccid": sms.iccid,
                "message": sms.message,
                "reference": sms.reference,
            }));
            if let Some(token) = &self.token {
                req = req.bearer_auth(token);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| SmsError::Transport(e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(SmsError::Transport(format!("HTTP {status}")));
            }
            let text = resp
                .text()
                .await
                .map_err(|e| SmsError::BadResponse(e.to_string()))?;
            if text.trim().is_empty() {
                return Ok(None);
            }
            let body: Json =
                serde_json::from_str(&text).map_err(|e| SmsError::BadResponse(e.to_string()))?;
            Ok(body
                .get("message_reference")
                .and_then(Json::as_str)
                .map(str::to_string))
        })
    }
}

/// The provider the configuration asks for.
pub fn provider_from_config(config: &ControlPlaneConfig) -> Arc<dyn SmsProvider> {
    match &config.sms_http_url {
        Some(url) => Arc::new(HttpProvider::new(
            url.clone(),
            config.sms_http_token.clone(),
        )),
        None => Arc::new(NoProvider),
    }
}

/// A reference unique without a database round trip: the time in
/// microseconds and 64 random bits.
fn new_reference(now: NaiveDateTime) -> String {
    let nonce: u64 = rand::thread_rng().gen();
    format!(
        "/smartsolar/{}/{nonce:016x}",
        now.and_utc().timestamp_micros()
    )
}

/// Records a WAKEUP SMS for `imei` inside `tx` (to be [`deliver`]ed after
/// commit); returns its `sms_history_id`.
pub async fn record_wakeup(
    tx: &mut Tx,
    imei: &str,
    enable_history_id: Option<i64>,
    by: &str,
    now: NaiveDateTime,
    config: &ControlPlaneConfig,
) -> Result<i64, ApiError> {
    let timeout = now + chrono::Duration::seconds(config.wakeup_sms_timeout_secs);
    insert_id(
        tx,
        "sms_history",
        vec![
            ("product_imei", imei.into()),
            ("attempted_retries", 0i64.into()),
            ("enable_history_id", enable_history_id.into()),
            ("message_reference", new_reference(now).into()),
            ("message", WAKEUP_MESSAGE.into()),
            ("sent_time", now.into()),
            ("sms_timeout", timeout.into()),
            ("trigger", WAKEUP_TRIGGER.into()),
        ],
        by,
        now,
    )
    .await
}

fn sms_not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("No sms_history with sms_history_id '{id}'"))
}

/// The `sms_history` columns [`deliver`] hands to the provider.
#[derive(sqlx::FromRow)]
struct OutgoingSms {
    product_imei: Option<String>,
    message: Option<String>,
    message_reference: Option<String>,
}

/// The `sms_history` columns a delivery receipt decides by.
#[derive(sqlx::FromRow)]
struct ReceiptedSms {
    sms_history_id: i64,
    status: Option<String>,
}

async fn sms_row(state: &AppState, id: i64) -> Result<Row, ApiError> {
    let mut tx = state.db.begin_read().await?;
    let row = sms_row_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(row)
}

/// The `sms_history` row `id` as the API answers it, read in `tx`.
async fn sms_row_in(tx: &mut Tx, id: i64) -> Result<Row, ApiError> {
    let mut stmt = select_all("sms_history");
    stmt.and_where(eq("sms_history_id", id));
    crate::rows::row(tx, "sms_history", &stmt)
        .await?
        .ok_or_else(|| sms_not_found(id))
}

/// What became of an SMS handed to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The provider took it (delivery is confirmed later by a receipt).
    Sent,
    /// No provider is configured: recorded `NotSent`.
    NotSent,
    /// The provider refused it or could not be reached: recorded `Failed`.
    Failed,
}

/// Hands a recorded SMS to the provider (after its transaction committed)
/// and records the outcome (`status`, and `status_info` saying why when it
/// did not go out). Returns the row afterwards and the outcome.
pub async fn deliver(state: &AppState, sms_id: i64) -> Result<(Row, Handover), ApiError> {
    let mut tx = state.db.begin_read().await?;
    let stmt = Query::select()
        .columns(["product_imei", "message", "message_reference"].map(Alias::new))
        .from(Alias::new("sms_history"))
        .and_where(eq("sms_history_id", sms_id))
        .to_owned();
    let outgoing: OutgoingSms = tx
        .fetch_typed_optional(&stmt)
        .await?
        .ok_or_else(|| sms_not_found(sms_id))?;
    let imei = outgoing.product_imei.unwrap_or_default();
    let (imsi, iccid): (Option<String>, Option<String>) =
        super::product_columns(&mut tx, &imei, &["imsi", "iccid"]).await?;
    tx.commit().await?;
    let sms = Sms {
        product_imei: imei,
        imsi,
        iccid,
        message: outgoing
            .message
            .unwrap_or_else(|| WAKEUP_MESSAGE.to_string()),
        reference: outgoing.message_reference.unwrap_or_default(),
    };
    let result = state.sms.send(&sms).await;
    let now = state.clock.now();
    let (values, handover) = match &result {
        Ok(Some(reference)) => (
            vec![("message_reference", reference.as_str().into())],
            Handover::Sent,
        ),
        Ok(None) => (Vec::new(), Handover::Sent),
        Err(e) => {
            tracing::warn!(sms_id, imei = %sms.product_imei, error = %e, "SMS not sent");
            let (status, handover) = match e {
                SmsError::NotConfigured => (NOT_SENT, Handover::NotSent),
                _ => (FAILED, Handover::Failed),
            };
            (
                vec![
                    ("status", status.into()),
                    ("status_info", e.to_string().into()),
                ],
                handover,
            )
        }
    };
    if !values.is_empty() {
        let mut tx = state.db.begin().await?;
        update(
            &mut tx,
            "sms_history",
            values,
            eq("sms_history_id", sms_id),
            SYSTEM_USER,
            now,
        )
        .await?;
        tx.commit().await?;
    }
    Ok((sms_row(state, sms_id).await?, handover))
}

/// The answer to a request whose point was one SMS (`send_wakeup`,
/// `force_connection` of a unit without RTC): `ok` when the provider took it,
/// else 503 (no provider: nothing was sent) or 502 (the provider failed), each
/// with the `sms_history` row, whose `status_info` says why.
pub(crate) fn handover_response(handover: Handover, row: Row, ok: Response) -> Response {
    let (status, message) = match handover {
        Handover::Sent => return ok,
        Handover::NotSent => (
            StatusCode::SERVICE_UNAVAILABLE,
            "No SMS provider is configured: the sms was recorded as not sent; see sms_history",
        ),
        Handover::Failed => (
            StatusCode::BAD_GATEWAY,
            "The SMS provider did not accept the sms; see sms_history",
        ),
    };
    (
        status,
        axum::Json(json!({
            "status": "error",
            "message": message,
            "data": row,
            "validation_errors": null,
        })),
    )
        .into_response()
}

/// `POST /v1/products/<imei>/send_wakeup` (ADMIN): records and sends a
/// WAKEUP SMS whatever the unit's software, and answers with its
/// `sms_history` row. A provider failure answers 502 with the row (status
/// `Failed`), no provider 503 (status `NotSent`).
pub(super) async fn send_wakeup(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Admin)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    super::lock_product(&mut tx, &user.visibility, &imei).await?;
    let id = record_wakeup(&mut tx, &imei, None, &user.username, now, &state.config).await?;
    tx.commit().await?;
    let (row, handover) = deliver(&state, id).await?;
    let ok = success(
        StatusCode::OK,
        "sms successfully sent",
        Json::Object(row.clone()),
    );
    Ok(handover_response(handover, row, ok))
}

/// `POST /v1/sms/delivery_receipt` (SYSTEM; the SMS provider's callback):
/// `{"message_reference": <ref>, "status": "delivered"}` marks the SMS
/// `Delivered` (idempotent). `"status": "failed"` marks it `Failed`.
/// Receipts for `Expired` SMS leave them expired.
async fn delivery_receipt(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::System)?;
    let body = object(body)?;
    let reference = super::str_field(&body, "message_reference")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            ApiError::field("message_reference", "field 'message_reference' is required")
        })?;
    let status = match super::str_field(&body, "status")?
        .unwrap_or_else(|| "delivered".into())
        .to_ascii_lowercase()
        .as_str()
    {
        "delivered" => DELIVERED,
        "failed" | "undelivered" => FAILED,
        other => {
            return Err(ApiError::field(
                "status",
                format!("field 'status' must be 'delivered' or 'failed', got '{other}'"),
            ))
        }
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let mut stmt = Query::select()
        .expr(tc("sms_history", "sms_history_id"))
        .expr(tc("sms_history", "status"))
        .from(Alias::new("sms_history"))
        .and_where(eq("message_reference", reference.as_str()))
        .to_owned();
    // An ENTITY-scoped caller only reaches its own units' SMS.
    if let Some(scope) = crate::query::scope_condition(
        crate::rows::catalogue(),
        crate::rows::table("sms_history"),
        &user.visibility,
    ) {
        stmt.and_where(scope);
    }
    let receipted: ReceiptedSms = tx.fetch_typed_optional(&stmt).await?.ok_or_else(|| {
        ApiError::NotFound(format!("No sms with message_reference '{reference}'"))
    })?;
    let id = receipted.sms_history_id;
    // Only an SMS still in flight (or failed, when a late receipt proves it
    // did arrive) changes; a repeated receipt is a no-op.
    let changes = match receipted.status.as_deref() {
        None => true,
        Some(FAILED) => status == DELIVERED,
        _ => false,
    };
    if changes {
        update(
            &mut tx,
            "sms_history",
            vec![("status", status.into())],
            eq("sms_history_id", id),
            &user.username,
            now,
        )
        .await?;
    }
    let row = sms_row_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        "sms status updated",
        Json::Object(row),
    ))
}

/// Marks every SMS still undelivered at its `sms_timeout` as `Expired`;
/// returns how many. The scheduler calls this periodically.
pub async fn expire_undelivered(tx: &mut Tx, now: NaiveDateTime) -> Result<u64, ApiError> {
    update(
        tx,
        "sms_history",
        vec![("status", EXPIRED.into())],
        Expr::col(Alias::new("status"))
            .is_null()
            .and(Expr::col(Alias::new("sms_timeout")).lte(now)),
        SYSTEM_USER,
        now,
    )
    .await
}
