//! Subscribing, unsubscribing, and the delivery log of a subscriber.
//!
//! A subscription belongs to the subscribing user's scope: a GLOBAL user's
//! has no entity and receives every notification of its channel; an ENTITY
//! user's carries the entity and receives only notifications about
//! products linked to it (see the worker's fan-out). There is one
//! subscription per channel and scope ("You may only subscribe one url to
//! each channel"). An ENTITY user sees and changes only its entity's
//! subscriptions.

use chrono::NaiveDateTime;
use sea_query::{Expr, Order, Query, SimpleExpr};
use serde_json::{json, Map, Value as Json};

use super::secrets::SecretBox;
use super::signing::new_key;
use super::url_policy::UrlPolicy;
use super::worker::PENDING;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::{Column, ColumnType};
use crate::db::{DbError, Row};
use crate::error::ApiError;
use crate::query::{Page, Visibility};
use crate::rows::{a, col, names, to_columns};
use crate::web::list_body;

/// A new subscription, with its key in clear (returned once, never stored so).
#[derive(Debug, Clone)]
pub struct Subscribed {
    pub subscriber_id: i64,
    pub url: String,
    pub channel_name: String,
    pub key: String,
}

/// The subscriber rows a user may act on: their entity's, or all for GLOBAL.
fn scope(user: &AuthUser) -> SimpleExpr {
    match user.visibility {
        Visibility::Global => Expr::cust("1 = 1"),
        Visibility::Entity(entity) => Expr::col((a("subscriber"), a("entity_id"))).eq(entity),
    }
}

fn entity_of(user: &AuthUser) -> Option<i64> {
    match user.visibility {
        Visibility::Global => None,
        Visibility::Entity(entity) => Some(entity),
    }
}

async fn channel_exists(state: &AppState, channel: &str) -> Result<bool, DbError> {
    let stmt = Query::select()
        .expr(Expr::cust("COUNT(*)"))
        .from(a("channel"))
        .and_where(Expr::col(a("name")).eq(channel))
        .to_owned();
    Ok(state.db.fetch_i64(&stmt).await? > 0)
}

fn no_channel(channel: &str) -> ApiError {
    ApiError::NotFound(format!("No channel with name '{channel}'"))
}

/// Subscribes `url` to `channel` for the user's scope.
pub async fn subscribe(
    state: &AppState,
    user: &AuthUser,
    channel: &str,
    url: &str,
    now: NaiveDateTime,
) -> Result<Subscribed, ApiError> {
    if !channel_exists(state, channel).await? {
        return Err(no_channel(channel));
    }
    let policy = UrlPolicy::from_config(&state.config).map_err(ApiError::Internal)?;
    policy
        .check_resolved(url)
        .await
        .map_err(|e| ApiError::field("url", e.to_string()))?;
    let key = new_key();
    let sealed = SecretBox::from_config(&state.config).seal(&key);
    let entity = entity_of(user);
    let mut tx = state.db.begin().await?;
    let existing = Query::select()
        .column(a("url"))
        .from(a("subscriber"))
        .and_where(Expr::col(a("channel_name")).eq(channel))
        .and_where(match entity {
            Some(e) => Expr::col(a("entity_id")).eq(e),
            None => Expr::col(a("entity_id")).is_null(),
        })
        .to_owned();
    let already = |url: &str| {
        ApiError::field(
            "url",
            format!(
                "the '{channel}' channel already has a subscription ('{url}'); only one url may be \
                 subscribed to each channel, unsubscribe it first"
            ),
        )
    };
    let subscribed: Option<(Option<String>,)> = tx.fetch_typed_optional(&existing).await?;
    if let Some((subscribed,)) = subscribed {
        return Err(already(subscribed.as_deref().unwrap_or_default()));
    }
    let insert = Query::insert()
        .into_table(a("subscriber"))
        .columns(
            [
                "url",
                "channel_name",
                "entity_id",
                "key",
                "created_at",
                "created_by",
            ]
            .map(a),
        )
        .values_panic([
            url.into(),
            channel.into(),
            entity.into(),
            sealed.into(),
            now.into(),
            user.username.clone().into(),
        ])
        .returning(Query::returning().column(a("subscriber_id")))
        .to_owned();
    let row: Option<(Option<i64>,)> = match tx.fetch_typed_optional(&insert).await {
        Ok(row) => row,
        // A concurrent subscribe won the unique index.
        Err(DbError::Unique { .. }) => return Err(already(url)),
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(Subscribed {
        subscriber_id: row.and_then(|(id,)| id).unwrap_or_default(),
        url: url.into(),
        channel_name: channel.into(),
        key,
    })
}

/// Removes the user's subscription of `url` to `channel`, with its pending
/// deliveries and its delivery log. 404 when there is none.
pub async fn unsubscribe(
    state: &AppState,
    user: &AuthUser,
    channel: &str,
    url: &str,
) -> Result<(), ApiError> {
    if !channel_exists(state, channel).await? {
        return Err(no_channel(channel));
    }
    let mut tx = state.db.begin().await?;
    let ids = Query::select()
        .column((a("subscriber"), a("subscriber_id")))
        .from(a("subscriber"))
        .and_where(Expr::col(a("channel_name")).eq(channel))
        .and_where(Expr::col(a("url")).eq(url))
        .and_where(scope(user))
        .to_owned();
    let rows: Vec<(Option<i64>,)> = tx.fetch_typed(&ids).await?;
    let ids: Vec<i64> = rows.into_iter().filter_map(|(id,)| id).collect();
    if ids.is_empty() {
        return Err(ApiError::NotFound(format!(
            "No subscription of url '{url}' to the '{channel}' channel"
        )));
    }
    // Explicitly, rather than relying on the cascade: SQLite needs foreign
    // keys on for that, and the log rows go first.
    let deliveries = Query::select()
        .column(a("webhook_delivery_id"))
        .from(a("webhook_delivery"))
        .and_where(Expr::col(a("subscriber_id")).is_in(ids.clone()))
        .to_owned();
    tx.execute(
        &Query::delete()
            .from_table(a("webhook_attempt"))
            .and_where(Expr::col(a("webhook_delivery_id")).in_subquery(deliveries))
            .to_owned(),
    )
    .await?;
    tx.execute(
        &Query::delete()
            .from_table(a("webhook_delivery"))
            .and_where(Expr::col(a("subscriber_id")).is_in(ids.clone()))
            .to_owned(),
    )
    .await?;
    tx.execute(
        &Query::delete()
            .from_table(a("subscriber"))
            .and_where(Expr::col(a("subscriber_id")).is_in(ids))
            .to_owned(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// 404 unless the subscriber exists within the user's scope.
async fn visible_subscriber(
    state: &AppState,
    user: &AuthUser,
    subscriber_id: i64,
) -> Result<(), ApiError> {
    let stmt = Query::select()
        .expr(Expr::cust("COUNT(*)"))
        .from(a("subscriber"))
        .and_where(Expr::col((a("subscriber"), a("subscriber_id"))).eq(subscriber_id))
        .and_where(scope(user))
        .to_owned();
    if state.db.fetch_i64(&stmt).await? == 0 {
        return Err(ApiError::NotFound(format!(
            "No subscriber with subscriber_id '{subscriber_id}'"
        )));
    }
    Ok(())
}

const DELIVERY_COLUMNS: [(&str, ColumnType); 10] = [
    ("webhook_delivery_id", ColumnType::Int),
    ("notification_id", ColumnType::Int),
    ("status", ColumnType::String),
    ("attempts", ColumnType::Int),
    ("next_attempt_at", ColumnType::Datetime),
    ("last_status_code", ColumnType::Int),
    ("last_error", ColumnType::Text),
    ("delivered_at", ColumnType::Datetime),
    ("created_at", ColumnType::Datetime),
    ("modified_at", ColumnType::Datetime),
];

const ATTEMPT_COLUMNS: [(&str, ColumnType); 7] = [
    ("webhook_delivery_id", ColumnType::Int),
    ("attempt", ColumnType::Int),
    ("started_at", ColumnType::Datetime),
    ("duration_ms", ColumnType::Int),
    ("status_code", ColumnType::Int),
    ("error", ColumnType::Text),
    ("outcome", ColumnType::String),
];

/// A page of a subscriber's deliveries, newest first, each with its
/// `channel` and its attempts (`attempt_log`), in the list body of the spec.
pub async fn list_deliveries(
    state: &AppState,
    user: &AuthUser,
    subscriber_id: i64,
    page: Page,
) -> Result<Json, ApiError> {
    visible_subscriber(state, user, subscriber_id).await?;
    let count = Query::select()
        .expr(Expr::cust("COUNT(*)"))
        .from(a("webhook_delivery"))
        .and_where(Expr::col(a("subscriber_id")).eq(subscriber_id))
        .to_owned();
    let total = state.db.fetch_i64(&count).await?;
    let d = a("webhook_delivery");
    let mut sel = Query::select();
    for (name, _) in DELIVERY_COLUMNS {
        sel.expr_as(Expr::col((d.clone(), a(name))), a(name));
    }
    sel.expr_as(Expr::col((a("notification"), a("channel"))), a("channel"))
        .from(d.clone())
        .inner_join(
            a("notification"),
            Expr::col((a("notification"), a("notification_id")))
                .equals((d.clone(), a("notification_id"))),
        )
        .and_where(Expr::col((d.clone(), a("subscriber_id"))).eq(subscriber_id))
        .order_by((d.clone(), a("webhook_delivery_id")), Order::Desc)
        .limit(page.per_page)
        .offset(page.offset());
    let mut columns: Vec<Column> = to_columns(&DELIVERY_COLUMNS);
    columns.push(col("channel", ColumnType::String));
    let refs: Vec<&Column> = columns.iter().collect();
    let mut deliveries: Vec<Row> = state.db.fetch_all(&sel, &refs).await?;
    let ids: Vec<i64> = deliveries
        .iter()
        .filter_map(|r| r.get("webhook_delivery_id").and_then(Json::as_i64))
        .collect();
    if !ids.is_empty() {
        let attempts = Query::select()
            .columns(names(&ATTEMPT_COLUMNS))
            .from(a("webhook_attempt"))
            .and_where(Expr::col(a("webhook_delivery_id")).is_in(ids))
            .order_by(a("webhook_attempt_id"), Order::Asc)
            .to_owned();
        let columns: Vec<Column> = to_columns(&ATTEMPT_COLUMNS);
        let refs: Vec<&Column> = columns.iter().collect();
        let attempts = state.db.fetch_all(&attempts, &refs).await?;
        for d in &mut deliveries {
            let id = d.get("webhook_delivery_id").cloned();
            let log: Vec<Json> = attempts
                .iter()
                .filter(|at| at.get("webhook_delivery_id") == id.as_ref())
                .map(|at| {
                    let mut at = at.clone();
                    at.remove("webhook_delivery_id");
                    Json::Object(at)
                })
                .collect();
            d.insert("attempt_log".into(), Json::Array(log));
        }
    }
    Ok(list_body(deliveries, total, page))
}

/// Queues delivery `delivery_id` of the subscriber again (whatever its
/// state), to be sent as soon as it is the head of the subscriber's queue;
/// the attempt count starts over, the attempt log is kept.
pub async fn resend(
    state: &AppState,
    user: &AuthUser,
    subscriber_id: i64,
    delivery_id: i64,
    now: NaiveDateTime,
) -> Result<Map<String, Json>, ApiError> {
    visible_subscriber(state, user, subscriber_id).await?;
    let mut tx = state.db.begin().await?;
    let stmt = Query::update()
        .table(a("webhook_delivery"))
        .value(a("status"), PENDING)
        .value(a("attempts"), 0i64)
        .value(a("next_attempt_at"), now)
        .value(a("locked_until"), Option::<NaiveDateTime>::None)
        .value(a("modified_at"), now)
        .and_where(Expr::col(a("webhook_delivery_id")).eq(delivery_id))
        .and_where(Expr::col(a("subscriber_id")).eq(subscriber_id))
        .to_owned();
    if tx.execute(&stmt).await? == 0 {
        return Err(ApiError::NotFound(format!(
            "No delivery {delivery_id} for subscriber {subscriber_id}"
        )));
    }
    tx.commit().await?;
    let mut data = Map::new();
    data.insert("webhook_delivery_id".into(), json!(delivery_id));
    data.insert("subscriber_id".into(), json!(subscriber_id));
    data.insert("status".into(), json!(PENDING));
    Ok(data)
}
