//! The notification outbox: every webhook notification is first a row in
//! `notification`, written inside the caller's transaction.
//!
//! Writers call [`enqueue`] with the transaction that makes the change, so
//! the change and its notification commit or roll back together. Delivery
//! (signing, retries, per-subscriber order) reads the table afterwards.

use chrono::NaiveDateTime;
use sea_query::{Alias, Query};
use serde_json::{json, Value as Json};

use crate::db::{DbError, Tx};
use crate::values::format_datetime;

/// The channels the spec defines.
pub const PRODUCT_STATUS: &str = "product-status";
pub const PRODUCT_ALERT: &str = "product-alert";
pub const DCM: &str = "dcm";

/// The body every subscriber receives: `{"channel", "timestamp", "data"}`.
pub fn payload(channel: &str, at: NaiveDateTime, data: Json) -> Json {
    json!({"channel": channel, "timestamp": format_datetime(&at), "data": data})
}

/// Adds a notification to the outbox inside `tx`; returns its id.
pub async fn enqueue(
    tx: &mut Tx,
    channel: &str,
    product_imei: Option<&str>,
    data: Json,
    at: NaiveDateTime,
) -> Result<i64, DbError> {
    let body = payload(channel, at, data).to_string();
    let stmt = Query::insert()
        .into_table(Alias::new("notification"))
        .columns(["channel", "product_imei", "payload", "created_at"].map(Alias::new))
        .values_panic([
            channel.into(),
            product_imei.map(str::to_string).into(),
            body.into(),
            at.into(),
        ])
        .returning(Query::returning().column(Alias::new("notification_id")))
        .to_owned();
    let id =
        crate::catalogue::Column::computed("notification_id", crate::catalogue::ColumnType::Int);
    let row = tx.fetch_optional(&stmt, &[&id]).await?;
    Ok(row
        .and_then(|r| r.get("notification_id").and_then(Json::as_i64))
        .unwrap_or_default())
}
